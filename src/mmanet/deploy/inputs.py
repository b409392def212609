"""Raw prediction inputs → validated batches for a model: ``.npz`` files, image files, or Python dicts.

A batch holds RAW (unstandardised) values — the model applies its stored normalisation. Any
subset of the model's modalities may be given; those not given are absent. Per modality the
value is one sample (the model's per-sample shape) or ``N`` samples (a leading axis). Beside
the modalities a batch may hold ``lengths_<m>`` (valid steps of a padded sequence, default the
full length), ``present_<m>`` (bool per sample, False = missing for that sample; its values are
then ignored) and ``label`` (ignored), as in the training ``.npz`` format (:mod:`mmanet.npz_format`).

Every problem — an unknown modality, a wrong shape or dtype, no modality present, NaN or
infinite values in a present entry — is an :class:`InputError` that names the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmanet.data.base import DataError
from mmanet.errors import MMANetError
from mmanet.modality import ModalitySpec
from mmanet.npz_format import (
    FLOAT32_MAX,
    LABEL,
    LENGTHS_PREFIX,
    PRESENT_PREFIX,
    float32_overflow,
    read_npz,
    referred_modality,
)


class InputError(MMANetError):
    """A prediction input the model cannot take; the message names the input and what is expected."""


@dataclass(frozen=True)
class ModelInputs:
    """What a model takes: modalities in order, per-sample shapes, the sequence modalities with a lengths input."""

    spec: ModalitySpec
    shapes: dict[str, tuple[int, ...]]
    lengths: tuple[str, ...] = ()

    def describe(self) -> str:
        return ", ".join(f"{m} {self.shapes[m]}" for m in self.spec.names)


@dataclass
class RawBatch:
    """N samples for one model: every modality's raw values (zeros where absent), presence, lengths."""

    source: str
    arrays: dict[str, np.ndarray]  # float32 (N, *shape) per modality of the model
    present: np.ndarray  # bool (N, M)
    lengths: dict[str, np.ndarray]  # int64 (N,) per modality in ModelInputs.lengths

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def present_names(self, i: int, spec: ModalitySpec) -> list[str]:
        return [m for m, p in zip(spec.names, self.present[i], strict=True) if p]


def batch_from_arrays(values: Mapping[str, Any], model: ModelInputs, source: str = "input") -> RawBatch:
    """Validate a mapping of arrays (the ``.npz`` layout, module docstring) into a :class:`RawBatch`."""
    if not isinstance(values, Mapping):
        kind = type(values).__name__
        raise InputError(f"{source}: inputs must be a mapping from modality names to arrays, got {kind}")
    names = model.spec.names
    for key in values:
        base = referred_modality(str(key)) or str(key)
        if key != LABEL and base not in names:
            raise InputError(
                f"{source}: unknown modality {str(key)!r}; the model takes {list(names)} (plus optional "
                f"{PRESENT_PREFIX}<m>, {LENGTHS_PREFIX}<m>)"
            )
    given = [m for m in names if m in values]
    if not given:
        raise InputError(f"{source}: no modality given; the model takes {model.describe()}")
    arrays, counts = {}, {}
    for m in given:
        arrays[m], counts[m] = _modality_array(values[m], m, model.shapes[m], source)
    if len(set(counts.values())) != 1:
        raise InputError(f"{source}: the modalities hold different numbers of samples {counts}")
    n = next(iter(counts.values()))
    present = np.zeros((n, len(names)), dtype=bool)
    for i, m in enumerate(names):
        if m in arrays:
            present[:, i] = _flags(values.get(PRESENT_PREFIX + m), n, m, source)
        elif PRESENT_PREFIX + m in values:
            raise InputError(f"{source}: {PRESENT_PREFIX}{m} is given but the modality {m!r} itself is not")
    lengths = {m: _lengths(values, m, model, n, source) for m in model.lengths}
    for m in names:
        if LENGTHS_PREFIX + m in values and m not in model.lengths:
            raise InputError(f"{source}: {LENGTHS_PREFIX}{m} is given but {m!r} is not a sequence with lengths")
    for i, m in enumerate(names):
        if m in arrays:
            _check_finite(arrays[m], present[:, i], lengths.get(m), m, source)
            arrays[m] = arrays[m].astype(np.float32)
        else:
            arrays[m] = np.zeros((n, *model.shapes[m]), dtype=np.float32)
    empty = np.flatnonzero(~present.any(axis=1))
    if empty.size:
        raise InputError(f"{source}: sample {int(empty[0])} has no modality present; every sample needs one")
    return RawBatch(source, arrays, present, lengths)


def restrict_to_combination(batch: RawBatch, spec: ModalitySpec, combination: str | None) -> RawBatch:
    """A customized (SF) model sees only its combination's modalities (as in its evaluation): the others are
    marked absent; a sample left with none is an :class:`InputError`. ``combination`` None: the batch as it is."""
    if combination is None:
        return batch
    mask = spec.combination(combination).mask().numpy()
    present = batch.present & mask[None, :]
    empty = np.flatnonzero(~present.any(axis=1))
    if empty.size:
        raise InputError(
            f"{batch.source}: sample {int(empty[0])} has none of the modalities of this customized (SF) model "
            f"({combination}); give at least one of them"
        )
    return RawBatch(batch.source, batch.arrays, present, batch.lengths)


def _modality_array(value: Any, m: str, shape: tuple[int, ...], source: str) -> tuple[np.ndarray, int]:
    try:
        x = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"{source}: {m!r} is not an array ({err})") from None
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise InputError(f"{source}: {m!r} must hold numbers (integer or float), got dtype {x.dtype}")
    if tuple(x.shape) == shape:
        x = x[None]
    elif tuple(x.shape[1:]) != shape or x.shape[0] == 0:
        raise InputError(
            f"{source}: {m!r} has shape {tuple(x.shape)}; the model takes {shape} per sample — pass {shape} (one "
            f"sample) or (N, {', '.join(str(d) for d in shape)})"
        )
    return x, int(x.shape[0])  # (cast to float32 once its values are checked: _check_finite)


def _flags(value: Any, n: int, m: str, source: str) -> np.ndarray:
    if value is None:
        return np.ones(n, dtype=bool)
    p = np.asarray(value)
    if p.shape == ():
        p = np.full(n, p)
    boolean = p.dtype == np.bool_ or (np.issubdtype(p.dtype, np.integer) and np.isin(p, (0, 1)).all())
    if p.shape != (n,) or not boolean:
        raise InputError(f"{source}: {PRESENT_PREFIX}{m} must be bool of shape ({n},), got {p.dtype} {p.shape}")
    return p.astype(bool)


def _lengths(values: Mapping[str, Any], m: str, model: ModelInputs, n: int, source: str) -> np.ndarray:
    steps = model.shapes[m][0]
    key = LENGTHS_PREFIX + m
    if key not in values:
        return np.full(n, steps, dtype=np.int64)
    lens = np.asarray(values[key])
    if lens.shape == ():
        lens = np.full(n, lens)
    if lens.shape != (n,) or not np.issubdtype(lens.dtype, np.integer) or lens.dtype == np.bool_:
        raise InputError(f"{source}: {key} must be integers of shape ({n},), got {lens.dtype} {lens.shape}")
    if ((lens < 1) | (lens > steps)).any():
        raise InputError(f"{source}: {key} must be in 1..{steps} (the padded length), got {lens.tolist()[:8]}")
    return lens.astype(np.int64)


def _check_finite(x: np.ndarray, present: np.ndarray, lengths: np.ndarray | None, m: str, source: str) -> None:
    valid = present.reshape((-1,) + (1,) * (x.ndim - 1))
    if lengths is not None:
        valid = valid & (np.arange(x.shape[1])[None, :, None] < lengths[:, None, None])
    bad = np.flatnonzero((~np.isfinite(x) & valid).reshape(len(x), -1).any(axis=1))
    if bad.size:
        raise InputError(
            f"{source}: {m!r} has NaN or infinite values in {bad.size} present sample(s) (first: {int(bad[0])}); "
            f"fix them or mark the samples missing with {PRESENT_PREFIX}{m}=False"
        )
    overflow = float32_overflow(x, valid)
    if overflow is not None:
        j, value, rows = overflow
        raise InputError(
            f"{source}: {m!r} sample {j} holds {value:.3g}, a finite {x.dtype} value outside float32's range "
            f"(±{FLOAT32_MAX:.2g}), in which the model computes ({rows} sample(s) like this); rescale it"
        )


# ----------------------------------------------------------------------------- files


def read_npz_batch(path: str | Path, model: ModelInputs) -> RawBatch:
    """A ``.npz`` file of raw arrays (module docstring) as a batch."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {path} does not exist")
    return batch_from_arrays(read_npz(path, InputError), model, source=str(path))


def read_image_for(path: str | Path, m: str, model: ModelInputs) -> np.ndarray:
    """An image file as modality ``m``'s raw ``(C, H, W)`` values, resized (bilinear) to the model's size."""
    from mmanet.data.image_io import read_image
    from mmanet.data.transforms import resize_image

    shape = model.shapes[m]
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise InputError(f"modality {m!r} takes {shape} per sample, not an image; pass it in an .npz file")
    modes = ("RGB",) if shape[0] == 3 else ("L", "I;16")
    error: DataError | None = None
    for mode in modes:
        try:
            image = read_image(path, mode, context=f"--input {m}")
            break
        except DataError as err:
            error = err
    else:
        raise InputError(str(error)) from None
    return resize_image(image, (shape[1], shape[2])).numpy()


def image_batch(assignments: Sequence[tuple[str, str]], model: ModelInputs) -> RawBatch:
    """``[(modality, image path), …]`` as ONE sample."""
    values: dict[str, Any] = {}
    for m, path in assignments:
        if m not in model.spec.names:
            raise InputError(f"--input {m}={path}: unknown modality {m!r}; the model takes {list(model.spec.names)}")
        if m in values:
            raise InputError(f"--input: modality {m!r} is given twice")
        values[m] = read_image_for(path, m, model)
    source = " ".join(f"{m}={p}" for m, p in assignments)
    return batch_from_arrays(values, model, source=source)


def parse_input(spec: str) -> tuple[str | None, str]:
    """One ``--input`` value as ``(modality, image path)`` for ``modality=IMAGE``, else ``(None, npz path)``."""
    name, sep, path = spec.partition("=")
    if sep and name and "/" not in name and not Path(spec).exists():
        return name, path
    return None, spec


def input_files(specs: Sequence[str]) -> list[Path]:
    """The files ``--input`` values name (what predict reads, so never writes over)."""
    return [Path(parse_input(spec)[1]) for spec in specs]


def read_inputs(specs: Sequence[str], model: ModelInputs) -> list[RawBatch]:
    """``--input`` values → batches: each ``FILE.npz`` is a batch; all ``modality=IMAGE`` together one sample."""
    if not specs:
        raise InputError(f"no --input given; pass FILE.npz or modality=IMAGE (the model takes {model.describe()})")
    batches, assignments = [], []
    for spec in specs:
        name, path = parse_input(spec)
        if name is not None:
            assignments.append((name, path))
        else:
            batches.append(read_npz_batch(path, model))
    if assignments:
        batches.append(image_batch(assignments, model))
    return batches


def to_tensors(batch: RawBatch, model: ModelInputs) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The batch as the network's inputs (raw values; the model normalises them) and the present mask."""
    inputs = {m: torch.from_numpy(batch.arrays[m]) for m in model.spec.names}
    for m, lens in batch.lengths.items():
        inputs[LENGTHS_PREFIX + m] = torch.from_numpy(lens)
    return inputs, torch.from_numpy(batch.present)
