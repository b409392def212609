"""CASIA-SURF CeFA (face anti-spoofing; rgb/depth/ir; protocols 4@1, 4@2, 4@3), from the user's copy.

Layout (docs/datasets.md), with ``P`` the protocol:

* ``ROOT/P_train.txt`` — one frame per line, ``train/1_186_3_1_4/profile/0001.jpg 0``, relative to
  ``ROOT/phase1``; the depth and IR frames replace the ``profile`` folder by ``depth`` / ``ir``
  (``rgb`` is the ``profile`` folder). → train.
* ``ROOT/P_dev_ref.txt`` — one video per line, ``dev/003000 1``, relative to ``ROOT/phase1``;
  its frames are the image files in ``<video>/profile`` (sorted by name), with the same file
  names in ``<video>/depth`` and ``<video>/ir``. → val.
* Test: the challenge release ships only the unlabelled ``P_test_res.txt`` (``test/000001``,
  videos under ``ROOT/phase2``), and a test split for evaluation must be labelled. Decision:
  the test split is read from ``ROOT/P_test_ref.txt`` in the ``dev_ref`` format
  (``test/000001 1``, relative to ``ROOT/phase2``) when the user has it; without it,
  :func:`load` raises a DataUnavailableError that says so and names the alternative
  ``test_source="dev"`` (test = the dev videos again — then val and test coincide, so do not
  select models on val). The unlabelled ``P_dev_res.txt`` / ``P_test_res.txt`` are readable
  for prediction with :func:`public_samples` / :func:`public_dataset`.

``frames_per_video`` keeps up to k evenly spaced frames of every dev/test video (default: all);
samples are frames, and :meth:`FaceAntiSpoofingDataset.videos` maps them to their videos.
Labels: 1 = real in the challenge lists; the paper's full release uses 0 = real —
``real_label`` flips it (see :mod:`mmanet.data.face_antispoofing`).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from mmanet.data.base import DataBundle, DataError, DataUnavailableError
from mmanet.data.face_antispoofing import (
    MODALITIES,
    UNLABELLED,
    FaceAntiSpoofingDataset,
    FaceOptions,
    FaceSample,
    check_optional_count,
    expect_fields,
    line_context,
    list_lines,
    make_bundle,
    parse_label,
    require_lists,
)
from mmanet.data.registry import DatasetEntry, register_dataset
from mmanet.data.transforms import Size

PROTOCOLS = ("4@1", "4@2", "4@3")
#: folder of each modality inside a video
FOLDERS = {"rgb": "profile", "depth": "depth", "ir": "ir"}
RGB_FOLDER = FOLDERS["rgb"]
#: which phase folder a video list's paths are relative to
PHASES = {"train": "phase1", "dev": "phase1", "test": "phase2"}
TEST_SOURCES = ("test_ref", "dev")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
LAYOUT = (
    "{p}_train.txt (frame lines `train/<video>/profile/0001.jpg 0`) and {p}_dev_ref.txt (video lines "
    "`dev/003000 1`) with the videos under phase1/, plus {p}_test_ref.txt (video lines `test/000001 1`, "
    "videos under phase2/) for a labelled test split"
)


def _layout(protocol: str) -> str:
    return LAYOUT.format(p=protocol)


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown CeFA protocol {protocol!r}; valid: {list(PROTOCOLS)}")


def list_path(root: str | Path, protocol: str, kind: str) -> Path:
    """``ROOT/{protocol}_{kind}.txt`` with kind in train, dev_ref, dev_res, test_ref, test_res."""
    _check_protocol(protocol)
    return Path(root) / f"{protocol}_{kind}.txt"


def _require(path: Path, protocol: str) -> None:
    if not path.is_file():
        raise DataUnavailableError(f"CeFA list {path} not found. Expected under {path.parent}: {_layout(protocol)}")


def read_train_list(root: str | Path, protocol: str) -> list[FaceSample]:
    """Frame-level training samples; depth/IR paths by replacing the ``profile`` folder."""
    path = list_path(root, protocol, "train")
    _require(path, protocol)
    phase = Path(root) / PHASES["train"]
    samples = []
    for number, fields in list_lines(path):
        expect_fields(fields, 2, path, number, "train/<video>/profile/<frame>.jpg label")
        label = parse_label(fields[1], path, number)
        parts = PurePosixPath(fields[0]).parts
        if RGB_FOLDER not in parts[:-1]:
            raise DataError(f"{path} line {number}: frame path {fields[0]!r} has no {RGB_FOLDER!r} folder")
        at = len(parts) - 2 - parts[:-1][::-1].index(RGB_FOLDER)  # the innermost 'profile' folder
        paths = tuple(phase.joinpath(*parts[:at], FOLDERS[m], *parts[at + 1 :]) for m in MODALITIES)
        video = str(PurePosixPath(*parts[:at]))
        samples.append(FaceSample(paths, label, line_context(path, number), video))
    return samples


def evenly_spaced(count: int, k: int | None) -> list[int]:
    """Up to ``k`` evenly spaced indices of ``count`` frames (segment centres); all when ``k`` is None."""
    if k is None or count <= k:
        return list(range(count))
    return [int((j + 0.5) * count / k) for j in range(k)]


def read_video_list(
    root: str | Path,
    protocol: str,
    kind: str,
    labelled: bool,
    frames_per_video: int | None = None,
) -> list[FaceSample]:
    """Frame samples of a video-level list (``dev_ref``, ``dev_res``, ``test_ref``, ``test_res``)."""
    path = list_path(root, protocol, kind)
    _require(path, protocol)
    phase = Path(root) / PHASES[kind.split("_")[0]]
    form = "<split>/<video>" + (" label" if labelled else "")
    samples = []
    for number, fields in list_lines(path):
        expect_fields(fields, 1 + int(labelled), path, number, form)
        label = parse_label(fields[1], path, number) if labelled else UNLABELLED
        video = phase / fields[0]
        frames_dir = video / RGB_FOLDER
        if not frames_dir.is_dir():
            raise DataError(f"{path} line {number}: video folder {frames_dir} not found")
        frames = sorted(p.name for p in frames_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not frames:
            raise DataError(f"{path} line {number}: no image files in {frames_dir}")
        context = line_context(path, number)
        for i in evenly_spaced(len(frames), frames_per_video):
            paths = tuple(video / FOLDERS[m] / frames[i] for m in MODALITIES)
            samples.append(FaceSample(paths, label, f"{context} (video {fields[0]}, frame {frames[i]})", fields[0]))
    return samples


def public_samples(
    root: str | Path, protocol: str = "4@1", split: str = "test", frames_per_video: int | None = None
) -> list[FaceSample]:
    """The unlabelled frames of ``{protocol}_dev_res.txt`` (``split="dev"``) or ``_test_res.txt`` (target -1)."""
    if split not in ("dev", "test"):
        raise DataError(f"unknown CeFA public split {split!r}; valid: ['dev', 'test']")
    check_optional_count(frames_per_video, "frames_per_video")
    return read_video_list(root, protocol, f"{split}_res", labelled=False, frames_per_video=frames_per_video)


def public_dataset(
    root: str | Path,
    protocol: str = "4@1",
    split: str = "test",
    image_size: Size = 112,
    frames_per_video: int | None = None,
) -> FaceAntiSpoofingDataset:
    """A prediction dataset over a ``_res`` list: evaluation transform, targets all -1."""
    options = FaceOptions.parse(image_size=image_size)
    samples = public_samples(root, protocol, split, frames_per_video)
    return FaceAntiSpoofingDataset(samples, options.image_size, augment=False)


def availability(root: str | Path | None) -> tuple[bool, str]:
    """Available when some protocol has its train and dev_ref lists; the message says which, and test labels."""
    if root is None:
        return False, f"CeFA is read from your own copy: set data.root to its directory ({_layout('4@k')})"
    found, labelled_test = [], []
    for protocol in PROTOCOLS:
        names = [list_path(root, protocol, k).name for k in ("train", "dev_ref")]
        try:
            require_lists(root, names, "CeFA", _layout(protocol))
        except DataUnavailableError:
            continue
        found.append(protocol)
        if list_path(root, protocol, "test_ref").is_file():
            labelled_test.append(protocol)
    if not found:
        return False, f"no CeFA protocol lists under {root}; expected: {_layout('4@k')}"
    return True, f"CeFA protocols {found} in {root}; labelled test lists (_test_ref.txt): {labelled_test or 'none'}"


def load(
    root: str | Path | None = None,
    seed: int = 0,
    protocol: str = "4@1",
    image_size: Size = 112,
    real_label: int = 1,
    max_samples_per_split: int | None = None,
    augment: bool = True,
    frames_per_video: int | None = None,
    test_source: str = "test_ref",
) -> DataBundle:
    """Train (``P_train.txt``), val (``P_dev_ref.txt``) and test (``P_test_ref.txt``; see the module doc).

    ``frames_per_video``: up to k evenly spaced frames per dev/test video (default all);
    ``test_source``: ``"test_ref"`` (default) or ``"dev"`` (test = the dev videos, when no test
    labels are available). Other options as for CASIA-SURF.
    """
    _check_protocol(protocol)
    check_optional_count(frames_per_video, "frames_per_video")
    if test_source not in TEST_SOURCES:
        raise DataError(f"unknown CeFA test_source {test_source!r}; valid: {list(TEST_SOURCES)}")
    options = FaceOptions.parse(image_size, real_label, max_samples_per_split, augment)
    base = require_lists(root, [f"{protocol}_train.txt", f"{protocol}_dev_ref.txt"], "CeFA", _layout(protocol))
    if test_source == "test_ref" and not list_path(base, protocol, "test_ref").is_file():
        raise DataUnavailableError(
            f"CeFA protocol {protocol}: no labelled test list {list_path(base, protocol, 'test_ref')}. The challenge "
            f"release only ships the unlabelled {protocol}_test_res.txt, which cannot be evaluated. Put the test "
            f"labels there as video lines `test/000001 1` (videos under {base / 'phase2'}), or set the option "
            "test_source='dev' to evaluate on the dev videos (then val and test are the same videos)."
        )
    val = read_video_list(base, protocol, "dev_ref", True, frames_per_video)
    test = val if test_source == "dev" else read_video_list(base, protocol, "test_ref", True, frames_per_video)
    splits = {"train": read_train_list(base, protocol), "val": val, "test": test}
    return make_bundle("cefa", splits, options, seed)


register_dataset(
    DatasetEntry(
        name="cefa",
        modalities=MODALITIES,
        task="classification (face anti-spoofing, ACER)",
        description="CASIA-SURF CeFA (rgb/depth/ir), protocols 4@1/4@2/4@3, from data.root with "
        "{protocol}_train.txt, {protocol}_dev_ref.txt and a labelled {protocol}_test_ref.txt "
        "(options: protocol, image_size, real_label, max_samples_per_split, augment, frames_per_video, "
        "test_source)",
        load=load,
        availability=availability,
    )
)
