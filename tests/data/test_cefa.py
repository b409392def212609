"""CeFA loader on a tiny copy in the published layout (tests/fixtures_face.py)."""

from __future__ import annotations

import shutil

import pytest
import torch

from fixtures_face import write_cefa
from mmanet.data import cefa
from mmanet.data.base import DataError, DataUnavailableError
from mmanet.data.face_antispoofing import UNLABELLED
from mmanet.data.registry import DATASETS

MODALITIES = ("rgb", "depth", "ir")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cefa")
    fixtures = {
        p: write_cefa(root, protocol=p, train_videos=2, frames=3, dev_videos=4, test_videos=4) for p in ("4@1", "4@2")
    }
    return root, fixtures


@pytest.fixture
def copy(tiny, tmp_path):
    shutil.copytree(tiny[0], tmp_path / "cefa")
    return tmp_path / "cefa"


def test_registered_and_available(tiny, tmp_path):
    root, _ = tiny
    entry = DATASETS.get("cefa")
    assert entry.modalities == MODALITIES and "ACER" in entry.task
    ok, message = entry.availability(root)
    assert ok and "4@1" in message and "4@2" in message and "4@3" not in message.split(";")[0]
    ok, message = entry.availability(tmp_path)
    assert not ok and "_train.txt" in message


@pytest.mark.parametrize("protocol", ["4@1", "4@2"])
def test_splits_counts_and_labels(tiny, protocol):
    root, fixtures = tiny
    fixture = fixtures[protocol]
    bundle = cefa.load(root, protocol=protocol)
    assert len(bundle.train) == 4 * 3
    assert len(bundle.val) == sum(fixture.frames["dev"]) and len(bundle.test) == sum(fixture.frames["test"])
    assert bundle.train.targets.tolist() == fixture.labels["train"]
    assert bundle.val.targets.tolist() == fixture.labels["dev"]
    assert bundle.test.targets.tolist() == fixture.labels["test"]
    assert bundle.name == "cefa" and bundle.spec.names == MODALITIES and bundle.num_classes == 2
    assert bundle.bona_fide_class == 1 and bundle.class_names == ["attack", "real"]
    assert bundle.input_shapes == {m: (3, 112, 112) for m in MODALITIES}


def test_paths_and_modalities(tiny):
    root, _ = tiny
    bundle = cefa.load(root)
    rgb, depth, ir = bundle.train.samples[0].paths
    assert rgb.parts[-5:] == ("phase1", "train", rgb.parts[-3], "profile", "0001.jpg")
    assert depth == rgb.parent.parent / "depth" / "0001.jpg" and ir == rgb.parent.parent / "ir" / "0001.jpg"
    assert bundle.train.samples[0].video.startswith("train/1_")
    test_rgb = bundle.test.samples[0].paths[0]
    assert test_rgb.parts[-5:-2] == ("phase2", "test", "000001") and test_rgb.parent.name == "profile"
    assert bundle.val.samples[0].paths[0].parts[-5:-2] == ("phase1", "dev", "003000")
    assert bundle.val.videos()[0] == "dev/003000"
    assert bundle.val.samples[1].context == "4@1_dev_ref.txt line 1 (video dev/003000, frame 0002.jpg)"


def test_sample_shapes(tiny):
    root, _ = tiny
    bundle = cefa.load(root, image_size=36)
    for dataset in (bundle.train, bundle.test):
        inputs, present, target = dataset[0]
        assert {m: tuple(x.shape) for m, x in inputs.items()} == {m: (3, 36, 36) for m in MODALITIES}
        assert present.all() and target.dtype == torch.long and target.dim() == 0


def test_frames_per_video_evenly_spaced(tiny):
    root, fixtures = tiny
    bundle = cefa.load(root, frames_per_video=2)
    assert len(bundle.val) == 2 * 4 and len(bundle.test) == 2 * 4
    frames = [s.paths[0].name for s in bundle.val.samples if s.video == "dev/003001"]  # 4 frames → 2nd and 4th
    assert fixtures["4@1"].frames["dev"][1] == 4 and frames == ["0002.jpg", "0004.jpg"]
    assert len(cefa.load(root, frames_per_video=10).val) == sum(fixtures["4@1"].frames["dev"])
    assert cefa.evenly_spaced(5, 1) == [2] and cefa.evenly_spaced(3, None) == [0, 1, 2]
    with pytest.raises(DataError, match="frames_per_video"):
        cefa.load(root, frames_per_video=0)


def test_label_convention_flip(tmp_path):
    fixture = write_cefa(tmp_path, train_videos=1, frames=2, dev_videos=2, test_videos=2, real_label=0)
    bundle = cefa.load(tmp_path, real_label=0)
    assert bundle.bona_fide_class == 0 and bundle.class_names == ["real", "attack"]
    for split, key in (("train", "train"), ("val", "dev"), ("test", "test")):
        real = torch.tensor(fixture.real[key])
        assert (bundle.split(split).targets[real] == 0).all() and (bundle.split(split).targets[~real] == 1).all()


def test_missing_test_labels_explained(tmp_path):
    write_cefa(tmp_path, train_videos=1, frames=2, dev_videos=2, test_videos=2, test_ref=False)
    with pytest.raises(DataUnavailableError, match=r"no labelled test list.*4@1_test_res.txt.*test_source='dev'"):
        cefa.load(tmp_path)
    bundle = cefa.load(tmp_path, test_source="dev")
    assert [s.context for s in bundle.test.samples] == [s.context for s in bundle.val.samples]
    assert "labelled test lists (_test_ref.txt): none" in cefa.availability(tmp_path)[1]
    with pytest.raises(DataError, match="test_source"):
        cefa.load(tmp_path, test_source="res")


def test_unknown_protocol_and_missing_lists(tiny, copy):
    with pytest.raises(DataError, match=r"unknown CeFA protocol '4@4'; valid: \['4@1', '4@2', '4@3'\]"):
        cefa.load(tiny[0], protocol="4@4")
    with pytest.raises(DataUnavailableError, match=r"4@3_train.txt.*Expected there"):
        cefa.load(tiny[0], protocol="4@3")
    (copy / "4@1_dev_ref.txt").unlink()
    with pytest.raises(DataUnavailableError, match="4@1_dev_ref.txt"):
        cefa.load(copy)


def test_missing_video_folder_names_list_line(copy):
    shutil.rmtree(copy / "phase2" / "test" / "000002")
    with pytest.raises(DataError, match=r"4@1_test_ref.txt line 2: video folder .*000002/profile not found"):
        cefa.load(copy)


def test_missing_and_corrupt_frames_named(copy):
    (copy / "phase1" / "dev" / "003000" / "ir" / "0002.jpg").unlink()
    (copy / "phase1" / "dev" / "003001" / "depth" / "0001.jpg").write_bytes(b"\x00garbage")
    bundle = cefa.load(copy)
    with pytest.raises(DataError, match=r"not found \(4@1_dev_ref.txt line 1 \(video dev/003000, frame 0002.jpg\)"):
        bundle.val[1]
    index = next(i for i, s in enumerate(bundle.val.samples) if s.video == "dev/003001")
    with pytest.raises(DataError, match=r"cannot decode image \(4@1_dev_ref.txt line 2 .*depth/0001.jpg"):
        bundle.val[index]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("train/1_100_1_1_1/profile/0001.jpg", "expected 2 whitespace-separated fields"),
        ("train/1_100_1_1_1/profile/0001.jpg yes", "label must be 0 or 1"),
        ("train/1_100_1_1_1/color/0001.jpg 1", "has no 'profile' folder"),
    ],
)
def test_malformed_train_line(copy, line, message):
    path = copy / "4@1_train.txt"
    path.write_text(path.read_text() + line + "\n")
    count = len(path.read_text().splitlines())
    with pytest.raises(DataError, match=rf"4@1_train.txt line {count}: .*{message}"):
        cefa.load(copy)


def test_malformed_dev_line(copy):
    path = copy / "4@1_dev_ref.txt"
    path.write_text("dev/003000 1 extra\n")
    with pytest.raises(DataError, match=r"4@1_dev_ref.txt line 1: expected 2"):
        cefa.load(copy)


def test_augmentation_determinism(tiny):
    root, _ = tiny
    a = cefa.load(root, seed=7, image_size=20).train
    b = cefa.load(root, seed=7, image_size=20).train
    a.set_epoch(3)
    b.set_epoch(3)
    assert torch.equal(a[5][0]["depth"], b[5][0]["depth"])
    b.set_epoch(4)
    assert not torch.equal(a[5][0]["depth"], b[5][0]["depth"])


def test_public_lists(tiny):
    root, fixtures = tiny
    assert (root / "4@1_test_res.txt").read_text().splitlines()[0] == "test/000001 "
    samples = cefa.public_samples(root, "4@1", "test")
    assert len(samples) == sum(fixtures["4@1"].frames["test"]) and {s.label for s in samples} == {UNLABELLED}
    dataset = cefa.public_dataset(root, "4@2", "dev", image_size=24, frames_per_video=1)
    assert len(dataset) == 4 and int(dataset[0][2]) == UNLABELLED
    assert dataset[0][0]["ir"].shape == (3, 24, 24)
    with pytest.raises(DataError, match="valid"):
        cefa.public_samples(root, "4@1", "train")
