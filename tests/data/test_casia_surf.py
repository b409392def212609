"""CASIA-SURF loader on a tiny copy in the published layout (tests/fixtures_face.py)."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from fixtures_face import write_casia_surf
from mmanet.data import casia_surf
from mmanet.data.base import DataError, DataUnavailableError, MultimodalDataset
from mmanet.data.face_antispoofing import UNLABELLED, FaceAntiSpoofingDataset
from mmanet.data.registry import DATASETS

MODALITIES = ("rgb", "depth", "ir")


@pytest.fixture(scope="module")
def surf(tmp_path_factory):
    return write_casia_surf(tmp_path_factory.mktemp("surf"), subjects=2, frames=3, val_samples=6, test_samples=8)


@pytest.fixture
def copy(surf, tmp_path):
    """A private copy to break."""
    shutil.copytree(surf.root, tmp_path / "surf")
    return tmp_path / "surf"


def test_registered_and_available(surf, tmp_path):
    entry = DATASETS.get("casia_surf")
    assert entry.modalities == MODALITIES and "ACER" in entry.task
    assert entry.availability(surf.root)[0]
    ok, message = entry.availability(tmp_path)
    assert not ok and "train_list.txt" in message
    assert not entry.availability(None)[0]


def test_splits_counts_and_labels(surf):
    bundle = casia_surf.load(surf.root)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (12, 6, 8)
    assert bundle.name == "casia_surf" and bundle.spec.names == MODALITIES
    assert bundle.task == "classification" and bundle.num_classes == 2
    assert bundle.class_names == ["attack", "real"] and bundle.bona_fide_class == 1
    for split in ("train", "val", "test"):
        assert bundle.split(split).targets.tolist() == surf.labels[split]
    assert bundle.input_shapes == {m: (3, 112, 112) for m in MODALITIES}
    assert all(isinstance(bundle.split(s), MultimodalDataset) for s in ("train", "val", "test"))


@pytest.mark.parametrize("split", ["train", "val"])
def test_sample_shapes_and_normalisation(surf, split):
    bundle = casia_surf.load(surf.root, image_size=[48, 40])
    inputs, present, target = bundle.split(split)[0]
    assert set(inputs) == set(MODALITIES)
    for x in inputs.values():
        assert x.shape == (3, 48, 40) and x.dtype == torch.float32
        assert x.min() >= -127.5 / 128 - 1e-5 and x.max() <= 127.5 / 128 + 1e-5
    assert present.dtype == torch.bool and present.tolist() == [True, True, True]
    assert target.dtype == torch.long and target.dim() == 0
    assert bundle.split(split).input_shapes() == {m: (3, 48, 40) for m in MODALITIES}


def test_class_signal_in_every_modality(surf):
    """The fixture is learnable: real samples are brighter in every modality, even augmented."""
    bundle = casia_surf.load(surf.root, image_size=32)
    for dataset in (bundle.train, bundle.test):
        for m in MODALITIES:
            means = torch.stack([dataset[i][0][m].mean() for i in range(len(dataset))])
            real = dataset.targets == bundle.bona_fide_class
            assert means[real].min() > means[~real].max()


def test_label_convention_flip(tmp_path):
    fixture = write_casia_surf(tmp_path, subjects=1, frames=2, val_samples=2, test_samples=2, real_label=0)
    bundle = casia_surf.load(tmp_path, real_label=0)
    assert bundle.bona_fide_class == 0 and bundle.class_names == ["real", "attack"]
    for split in ("train", "val", "test"):
        targets = bundle.split(split).targets
        real = torch.tensor(fixture.real[split])
        assert (targets[real] == 0).all() and (targets[~real] == 1).all()
    assert bundle.class_names[bundle.bona_fide_class] == "real"
    with pytest.raises(DataError, match="real_label"):
        casia_surf.load(tmp_path, real_label=2)


def test_missing_image_names_file_and_line(copy):
    lines = (copy / "test_private_list.txt").read_text().splitlines()
    victim = lines[4].split()[1]  # the depth image of line 5
    (copy / victim).unlink()
    bundle = casia_surf.load(copy)
    bundle.test[3]  # other samples still load
    with pytest.raises(DataError, match=rf"not found \(test_private_list.txt line 5: .*{victim}\)"):
        bundle.test[4]


def test_corrupt_jpeg_names_file_and_line(copy):
    victim = (copy / "train_list.txt").read_text().splitlines()[1].split()[2]
    (copy / victim).write_bytes(b"garbage bytes, not a JPEG at all")
    bundle = casia_surf.load(copy)
    with pytest.raises(DataError, match=rf"cannot decode image \(train_list.txt line 2: .*{victim}\)"):
        bundle.train[1]


@pytest.mark.parametrize(
    ("line", "message"),
    [("a.jpg b.jpg 1", "expected 4 whitespace-separated fields"), ("a.jpg b.jpg c.jpg 2", "label must be 0 or 1")],
)
def test_malformed_line_names_file_and_line(copy, line, message):
    path = copy / "val_private_list.txt"
    lines = path.read_text().splitlines()
    lines.insert(2, line)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"val_private_list.txt line 3: {message}"):
        casia_surf.load(copy)


def test_missing_list_is_unavailable(copy):
    (copy / "test_private_list.txt").unlink()
    with pytest.raises(DataUnavailableError, match=r"test_private_list.txt.*Expected there: train_list.txt"):
        casia_surf.load(copy)
    with pytest.raises(DataUnavailableError, match="data.root"):
        casia_surf.load(None)


def test_augmentation_determinism(surf):
    train = casia_surf.load(surf.root, seed=3, image_size=24).train
    twin = casia_surf.load(surf.root, seed=3, image_size=24).train
    other_seed = casia_surf.load(surf.root, seed=4, image_size=24).train

    def batch(dataset, order):
        return {i: dataset[i][0]["rgb"] for i in order}

    first = batch(train, [0, 1, 2, 3])
    again = batch(twin, [3, 2, 1, 0])  # order does not matter
    assert all(torch.equal(first[i], again[i]) for i in first)
    assert not torch.equal(first[0], other_seed[0][0]["rgb"])
    train.set_epoch(1)
    assert not torch.equal(first[0], train[0][0]["rgb"])
    train.set_epoch(0)
    assert torch.equal(first[0], train[0][0]["rgb"])
    # modalities share the geometry: a different draw per sample but the same for all modalities
    inputs = train[0][0]
    assert inputs["rgb"].shape == inputs["depth"].shape == inputs["ir"].shape


def test_workers_do_not_change_augmentation(surf):
    train = casia_surf.load(surf.root, seed=1, image_size=16).train
    train.set_epoch(2)
    serial = torch.cat([b[0]["ir"] for b in DataLoader(train, batch_size=4)])
    parallel = torch.cat([b[0]["ir"] for b in DataLoader(train, batch_size=4, num_workers=2)])
    assert torch.equal(serial, parallel)


def test_evaluation_and_no_augment_are_deterministic(surf):
    bundle = casia_surf.load(surf.root, augment=False, image_size=20)
    bundle.train.set_epoch(5)
    a = bundle.train[0][0]["depth"]
    bundle.train.set_epoch(6)
    assert torch.equal(a, bundle.train[0][0]["depth"])
    assert not bundle.val.augment and not bundle.test.augment


def test_max_samples_per_split(surf):
    small = casia_surf.load(surf.root, max_samples_per_split=4, seed=0)
    assert (len(small.train), len(small.val), len(small.test)) == (4, 4, 4)
    again = casia_surf.load(surf.root, max_samples_per_split=4, seed=0)
    assert [s.context for s in small.train.samples] == [s.context for s in again.train.samples]
    with pytest.raises(DataError, match="max_samples_per_split"):
        casia_surf.load(surf.root, max_samples_per_split=0)


def test_public_lists(surf):
    assert (surf.root / "test_public_list.txt").read_text().splitlines()[0].endswith(" ")
    samples = casia_surf.public_samples(surf.root, "test")
    assert len(samples) == 8 and all(s.label == UNLABELLED for s in samples)
    assert samples[0].paths[0] == surf.root / "Testing/0000/000000-color.jpg"
    assert samples[0].paths[2] == surf.root / "Testing/0000/000000-ir.jpg"
    dataset = casia_surf.public_dataset(surf.root, "val", image_size=32)
    assert isinstance(dataset, FaceAntiSpoofingDataset) and len(dataset) == 6
    inputs, _, target = dataset[0]
    assert inputs["rgb"].shape == (3, 32, 32) and int(target) == UNLABELLED
    with pytest.raises(DataError, match="valid"):
        casia_surf.public_samples(surf.root, "train")
    with pytest.raises(DataError, match="expected 4"):  # a public list is not an evaluation list
        casia_surf.read_list(surf.root, "test_public_list.txt", labelled=True)


def test_set_epoch_reaches_persistent_workers(surf):
    train = casia_surf.load(surf.root, seed=1, image_size=16, max_samples_per_split=4).train
    loader = DataLoader(train, batch_size=4, num_workers=1, persistent_workers=True)
    seen = []
    for epoch in range(2):
        train.set_epoch(epoch)
        seen.append(next(iter(loader))[0]["rgb"])
    train.set_epoch(1)
    assert torch.equal(seen[1], torch.stack([train[i][0]["rgb"] for i in range(4)]))
    assert not torch.equal(seen[0], seen[1])
