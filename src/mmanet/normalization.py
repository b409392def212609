"""Input normalisation that travels with a trained model: ``x ↦ (x − mean) / std`` per modality.

The one implementation: :func:`fit_normalization` computes the statistics, :func:`normalize`
applies them, :class:`Normalization` records them. Datasets standardise their inputs with
statistics of the training split (mfeat through ``data.base.Standardizer``, npz, AV-digits) or
with fixed constants (face images: ``(x − 127.5) / 128``; the segmentation transforms) and
record them in ``DataBundle.normalization``. From there they go into
:class:`~mmanet.task.TaskInfo`, hence into every checkpoint, the ONNX graph
(:class:`InputNormalizer`) and the model card — so a trained model is evaluated with its
training statistics (never statistics refitted on new data) and deployed on RAW inputs.

``mean``/``std`` broadcast against one sample: shape ``()`` (one value), ``(F,)`` (per
feature; a sequence ``(T, F)`` per feature over time) or ``(C, 1, 1)`` (per image channel).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from mmanet.errors import MMANetError
from mmanet.modality import ModalitySpec


class NormalizationError(MMANetError):
    """Statistics that cannot normalise a modality (non-finite, std ≤ 0, another shape, a modality left out);
    the caller adds the file or dataset they came from."""


@dataclass(frozen=True)
class Normalization:
    """One modality's statistics as float32 values (flattened) and their broadcast shape."""

    shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: an input value of exactly 0 stays 0 (depth sensors: 0 = no reading), as the datasets do
    keep_zero: bool = False

    @classmethod
    def from_arrays(cls, mean: Any, std: Any, keep_zero: bool = False) -> Normalization:
        """From array-likes (scalars, lists, arrays, tensors); ``std`` must be positive, both finite."""
        try:
            m = np.asarray(mean, dtype=np.float32)
            s = np.asarray(std, dtype=np.float32)
            shape = np.broadcast_shapes(m.shape, s.shape)
        except (TypeError, ValueError) as err:
            raise NormalizationError(f"normalisation mean/std must be numbers or equal-shaped lists: {err}") from None
        m, s = np.broadcast_to(m, shape), np.broadcast_to(s, shape)
        if not (np.isfinite(m).all() and np.isfinite(s).all()) or (s <= 0).any():
            raise NormalizationError("normalisation mean/std must be finite with std > 0")
        shape_t = tuple(int(d) for d in shape)
        return cls(shape_t, tuple(float(v) for v in m.ravel()), tuple(float(v) for v in s.ravel()), bool(keep_zero))

    @classmethod
    def from_dict(cls, d: Any) -> Normalization:
        if not isinstance(d, Mapping) or not {"mean", "std"} <= set(d) <= {"mean", "std", "keep_zero"}:
            raise NormalizationError(f"a normalisation is {{mean: …, std: …[, keep_zero: …]}}, got {d!r}")
        return cls.from_arrays(d["mean"], d["std"], bool(d.get("keep_zero", False)))

    def to_dict(self) -> dict[str, Any]:
        mean, std = self.arrays()
        out: dict[str, Any] = {"mean": mean.tolist(), "std": std.tolist()}
        if self.keep_zero:
            out["keep_zero"] = True
        return out

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` as float32 arrays of :attr:`shape`."""
        return (
            np.asarray(self.mean, dtype=np.float32).reshape(self.shape),
            np.asarray(self.std, dtype=np.float32).reshape(self.shape),
        )

    def tensors(self) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` as float32 tensors of :attr:`shape`."""
        mean, std = self.arrays()
        return torch.from_numpy(mean), torch.from_numpy(std)

    def fits(self, sample_shape: tuple[int, ...]) -> bool:
        """Whether the statistics broadcast against one sample of ``sample_shape`` without changing it."""
        try:
            return np.broadcast_shapes(self.shape, tuple(sample_shape)) == tuple(sample_shape)
        except ValueError:
            return False

    def apply(self, x: Any, valid: Any = None) -> np.ndarray:
        """:func:`normalize` on an array-like: float32 values, zeros kept as zeros with :attr:`keep_zero`,
        0 where ``valid`` (broadcast against ``x``) is False."""
        mean, std = self.tensors()
        mask = None if valid is None else torch.from_numpy(np.asarray(valid, dtype=bool))
        return normalize(torch.from_numpy(np.asarray(x, dtype=np.float32)), mean, std, self.keep_zero, mask).numpy()


Normalizations = Mapping[str, Normalization]

#: what becomes of a (near-)constant feature, whose std is at most ``min_std``: ``"unit"`` divides it by 1
#: (it is only centred: npz, AV-digits), ``"clamp"`` by ``min_std`` (mfeat's ``Standardizer``)
SmallStd = Literal["unit", "clamp"]


def fit_normalization(
    values: Any,
    axes: tuple[int, ...] = (0,),
    *,
    min_std: float = 1e-8,
    small_std: SmallStd = "unit",
    keep_zero: bool = False,
) -> Normalization:
    """The statistics of ``values`` (only the entries that count — present samples, valid time steps —
    stacked along axis 0): mean and population std over ``axes``, accumulated in float64 and stored in
    float32, with the shape of one entry where the reduced axes are 1 (an image's per-channel ``(C, 1, 1)``;
    pass the values flattened for one global value). Non-finite statistics are a :class:`NormalizationError`."""
    x = np.asarray(values)
    mean = x.mean(axis=axes, dtype=np.float64, keepdims=True)
    std = np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True))
    std = np.where(std > min_std, std, 1.0) if small_std == "unit" else np.maximum(std, min_std)
    return Normalization.from_arrays(mean[0].astype(np.float32), std[0].astype(np.float32), keep_zero)


def normalize(x: Tensor, mean: Tensor, std: Tensor, keep_zero: bool = False, valid: Tensor | None = None) -> Tensor:
    """``(x − mean) / std`` in float32, the one place it is computed (datasets, :class:`InputNormalizer`
    and its ONNX graph): with ``keep_zero`` an input of exactly 0 stays 0; where ``valid`` (broadcast
    against ``x``) is False the result is 0."""
    x = x.float()
    out = (x - mean) / std
    zero = torch.zeros((), dtype=out.dtype, device=out.device)
    if keep_zero:
        out = torch.where(x == 0, zero, out)
    return out if valid is None else torch.where(valid, out, zero)


def normalizations_to_dict(norms: Normalizations | None) -> dict[str, dict[str, Any]] | None:
    return None if norms is None else {m: n.to_dict() for m, n in norms.items()}


def normalizations_from_dict(d: Any) -> dict[str, Normalization] | None:
    if d is None:
        return None
    if not isinstance(d, Mapping):
        raise NormalizationError(f"normalization must map modality names to {{mean, std}}, got {d!r}")
    return {str(m): Normalization.from_dict(v) for m, v in d.items()}


def check_normalizations(norms: Any, names: tuple[str, ...], shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """Stored statistics validated against a dataset's modalities and per-sample shapes (a
    :class:`NormalizationError`, which is a ``ValueError``, otherwise)."""
    if isinstance(norms, Mapping) and all(isinstance(v, Normalization) for v in norms.values()):
        parsed = dict(norms)
    else:
        parsed = normalizations_from_dict(norms) or {}
    if set(parsed) != set(names):
        raise NormalizationError(
            f"the stored normalisation covers modalities {sorted(parsed)}, the data has {sorted(names)}"
        )
    for m in names:
        if not parsed[m].fits(tuple(shapes[m])):
            raise NormalizationError(
                f"the stored normalisation of {m!r} has shape {parsed[m].shape}, which does not fit its per-sample "
                f"shape {tuple(shapes[m])}"
            )
    return parsed


class InputNormalizer(nn.Module):
    """Raw inputs → what the network was trained on (the datasets' conventions).

    ``(x − mean) / std`` for modalities with statistics; zeros for absent modalities (a NaN
    in a missing modality never reaches the network) and for sequence steps past
    ``lengths_<m>``. Traceable into an ONNX graph.
    """

    def __init__(self, spec: ModalitySpec, normalization: Normalizations | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.normalized = tuple(m for m in spec.names if normalization and m in normalization)
        self.keep_zero = tuple(m for m in self.normalized if normalization[m].keep_zero)  # type: ignore[index]
        for m in self.normalized:
            mean, std = normalization[m].arrays()  # type: ignore[index]
            self.register_buffer(f"mean_{m}", torch.from_numpy(mean.copy()), persistent=False)
            self.register_buffer(f"std_{m}", torch.from_numpy(std.copy()), persistent=False)

    def forward(self, inputs: Mapping[str, Tensor], present: Tensor) -> dict[str, Tensor]:
        out = dict(inputs)
        for i, m in enumerate(self.spec.names):
            x = inputs[m].float()
            valid = present[:, i].reshape((-1,) + (1,) * (x.dim() - 1))
            lengths = inputs.get(f"lengths_{m}")
            if lengths is not None and x.dim() == 3:
                steps = torch.arange(x.shape[1], device=x.device)
                valid = valid & (steps.reshape(1, -1, 1) < lengths.reshape(-1, 1, 1))
            if m in self.normalized:
                mean, std = getattr(self, f"mean_{m}"), getattr(self, f"std_{m}")
                out[m] = normalize(x, mean, std, m in self.keep_zero, valid)
            else:
                out[m] = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
        return out
