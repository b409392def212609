"""The ``.npz`` layout mmanet reads, for training data (:mod:`mmanet.data.npz`) and prediction inputs
(:mod:`mmanet.deploy.inputs`): the array names and reading an archive without unpickling anything.

A file written with ``numpy.savez`` holds, with a common first axis N:

* one array per modality, named by the modality (``accel``, ``gyro``, ``rgb`` …); the
  per-sample shape is ``(F,)`` (vector), ``(T, F)`` (sequence) or ``(C, H, W)`` (image);
* ``label``: integer class indices ``(N,)`` (classification) or ``(N, H, W)`` (segmentation);
* optional ``present_<modality>``: bool ``(N,)``, False where the modality is genuinely
  missing for that sample (its values are ignored and may even be NaN);
* optional ``lengths_<modality>``: int ``(N,)`` valid lengths 1..T of a sequence padded to T
  (values beyond a sample's length are ignored).

Every function that can fail takes the error class its caller raises (``DataError`` for training
data, ``InputError`` for prediction inputs); messages name the file and the array.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

LABEL = "label"
PRESENT_PREFIX = "present_"
LENGTHS_PREFIX = "lengths_"
#: a modality's per-sample rank → what it is
SHAPE_KINDS = {1: "vector (F,)", 2: "sequence (T, F)", 3: "image (C, H, W)"}
#: the largest magnitude float32 holds: mmanet computes in float32, so a larger (finite) value becomes infinite
FLOAT32_MAX = float(np.finfo(np.float32).max)

#: the first bytes of a zip archive (an ``.npz``), of a single ``.npy`` array, and of a pickle (protocol 2+)
ZIP_MAGIC, NPY_MAGIC, PICKLE_MAGIC = b"PK", b"\x93NUMPY", b"\x80"
#: numpy's advice to load a file with pickle enabled: never passed on (mmanet never unpickles data)
_PICKLE_ADVICE = re.compile(r"[^.;]*allow_pickle[^.;]*[.;]?\s*")

Error = Callable[[str], Exception]


# ---------------------------------------------------------------------------- array names


def modality_names(arrays: Mapping[str, object]) -> list[str]:
    """The keys that are modalities (not ``label``, ``present_<m>`` or ``lengths_<m>``), in stored order."""
    return [k for k in arrays if k != LABEL and not k.startswith((PRESENT_PREFIX, LENGTHS_PREFIX))]


def referred_modality(key: str) -> str | None:
    """The modality a ``present_<m>`` or ``lengths_<m>`` key refers to (None for any other key)."""
    for prefix in (PRESENT_PREFIX, LENGTHS_PREFIX):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return None


# ---------------------------------------------------------------------------- values


def float32_overflow(x: np.ndarray, valid: np.ndarray) -> tuple[int, float, int] | None:
    """``(first sample, its value, number of samples)`` where a valid, finite value of ``x`` lies outside
    float32's range (the cast to float32 would make it ±inf); None when there is none (or ``x`` is no wider
    than float32). ``valid`` broadcasts against ``x``."""
    if not np.issubdtype(x.dtype, np.floating) or np.finfo(x.dtype).max <= FLOAT32_MAX:
        return None
    huge = (np.abs(np.where(np.isfinite(x), x, 0)) > FLOAT32_MAX) & np.broadcast_to(valid, x.shape)
    if not huge.any():
        return None
    first = np.unravel_index(int(np.flatnonzero(huge.ravel())[0]), x.shape)
    return int(first[0]), float(x[first]), int(huge.reshape(len(x), -1).any(axis=1).sum())


# ---------------------------------------------------------------------------- reading a file


def _numpy_reason(err: BaseException) -> str:
    """numpy's message without its advice to enable ``allow_pickle``."""
    return _PICKLE_ADVICE.sub("", str(err)).strip() or type(err).__name__


def _file_kind(path: Path, error: Error) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(8)
    except OSError as err:
        raise error(f"cannot read {path}: {err.strerror or err}") from None


def read_npz(path: str | Path, error: Error) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` archive, in stored order (``allow_pickle=False``); problems raise ``error``.

    A file that is not a zip archive (text, a pickle named ``.npz``, a single ``.npy`` array) is refused by
    its first bytes, before numpy sees it: nothing in it is unpickled, and no message advises doing so."""
    path = Path(path)
    head = _file_kind(path, error)
    if head.startswith(NPY_MAGIC):
        raise error(f"{path} holds a single array, not an .npz archive of named arrays; write it with numpy.savez")
    if not head.startswith(ZIP_MAGIC):
        kind = "a Python pickle" if head.startswith(PICKLE_MAGIC) else "empty" if not head else "not a zip archive"
        raise error(
            f"{path} is not a readable .npz archive (it is {kind}); mmanet reads named numeric arrays written with "
            "numpy.savez, and never unpickles data"
        )
    errors = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)
    try:
        archive = np.load(path, allow_pickle=False)
    except MemoryError:
        raise error(f"{path} is not an .npz archive: it holds one array too large to load") from None
    except errors as err:
        reason = _numpy_reason(err)
        raise error(f"{path} is not a readable .npz archive ({reason}); write it with numpy.savez") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise error(f"{path} holds a single array, not an .npz archive of named arrays; write it with numpy.savez")
    arrays: dict[str, np.ndarray] = {}
    with archive:
        # numpy types NpzFile.zip as Optional: close() sets it to None; the archive is open in this block
        members = archive.zip
        assert members is not None
        for key in archive.files:
            try:
                damage = _header_damage(members, key)
                if damage is None:
                    arrays[key] = np.asarray(archive[key])
            except MemoryError:
                raise error(f"array {key!r} in {path} is too large to load into memory") from None
            except errors as err:
                raise error(
                    f"array {key!r} in {path} cannot be read ({_numpy_reason(err)}); arrays must be numeric: mmanet "
                    "never unpickles data, so arrays of Python objects cannot be read"
                ) from None
            if damage is not None:
                raise error(f"array {key!r} in {path} is damaged: {damage}; write the file again with numpy.savez")
    return arrays


def _header_damage(archive: zipfile.ZipFile, key: str) -> str | None:
    """What is wrong with a member whose ``.npy`` header claims more data than the member holds (checked
    before allocating it); None when nothing is."""
    member = f"{key}.npy" if f"{key}.npy" in archive.namelist() else key
    info = archive.getinfo(member)
    with archive.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(fh, max_header_size=1 << 20)
        header_size = fh.tell()
    if dtype.hasobject:
        return None  # refused by allow_pickle=False when it is read
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = info.file_size - header_size
    if claimed > held:
        return f"its header claims shape {tuple(shape)} ({claimed:,} bytes of {dtype}) but it holds {held:,} bytes"
    return None
