"""Paired transforms for multimodal image samples (torch only, no torchvision).

A :class:`PairedSample` holds one ``(C, H, W)`` float tensor per modality (0..255 scale
before :class:`Normalize`) and an optional ``(H, W)`` long label map. Every op is called as
``op(sample, generator) -> sample`` and never mutates its input.

* Geometric ops (:class:`RandomScale`, :class:`RandomCrop`, :class:`RandomRotation`,
  :class:`RandomHorizontalFlip`) draw ONE random parameter per sample and apply it
  identically to every modality and to the label; images are resampled bilinearly, labels
  with nearest neighbour, so a label map only ever holds its own values plus the void fill.
  :class:`Resize` and :class:`RandomScale` resample the modalities they name in ``nearest``
  with nearest neighbour too (depth with 0 = invalid: holes are never blended into valid values).
* Photometric ops (:class:`ColorJitter`) touch only the modalities they name.
* All randomness comes from the ``generator`` argument, never the global RNG;
  :func:`sample_generator` derives it from ``(seed, epoch, index)`` so augmentation does not
  depend on the number of workers or on the order samples are fetched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmanet.normalization import normalize

#: default label fill for padding and rotation (the usual "ignore" index); pass the dataset's own
VOID = 255

Size = int | Sequence[int]
PairedTransform = Callable[["PairedSample", torch.Generator], "PairedSample"]


def as_size(size: Size) -> tuple[int, int]:
    """``int`` → ``(size, size)``; ``(H, W)`` → itself; both must be positive."""
    if isinstance(size, bool):
        raise ValueError(f"a size is an int or [H, W], got {size!r}")
    if isinstance(size, int | np.integer):
        pair = (size, size)
    else:
        values = tuple(size) if isinstance(size, Sequence | torch.Size) and not isinstance(size, str) else ()
        if len(values) != 2:
            raise ValueError(f"a size is an int or [H, W], got {size!r}")
        pair = (values[0], values[1])
    wrong = [v for v in pair if not isinstance(v, int | np.integer) or isinstance(v, bool)]
    if wrong:
        raise ValueError(f"a size holds whole numbers of pixels, got {wrong[0]!r} in {size!r}")
    small = [int(v) for v in pair if v <= 0]
    if small:
        raise ValueError(f"a size needs positive numbers of pixels, got {small[0]} in {size!r}")
    return int(pair[0]), int(pair[1])


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch, index)`` (well mixed by numpy's SeedSequence)."""
    entropy = [int(v) % 2**64 for v in (seed, epoch, index)]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


@dataclass
class PairedSample:
    """One sample: ``images[modality]`` is ``(C, H, W)`` float; ``label`` an optional ``(H, W)`` long map."""

    images: dict[str, Tensor]
    label: Tensor | None = None

    def spatial_size(self) -> tuple[int, int]:
        """The common ``(H, W)`` of all modalities and the label; an error if they differ."""
        sizes = {name: tuple(x.shape[-2:]) for name, x in self.images.items()}
        if self.label is not None:
            sizes["label"] = tuple(self.label.shape[-2:])
        distinct = set(sizes.values())
        if len(distinct) != 1:
            raise ValueError(f"modalities differ in size {sizes}; put a Resize first")
        (h, w) = distinct.pop()
        return int(h), int(w)

    def map(self, image_fn: Callable[[Tensor], Tensor], label_fn: Callable[[Tensor], Tensor]) -> PairedSample:
        """A new sample with ``image_fn`` applied to every modality and ``label_fn`` to the label."""
        label = None if self.label is None else label_fn(self.label)
        return PairedSample({name: image_fn(x) for name, x in self.images.items()}, label)


# ----------------------------------------------------------------------------- resampling kernels


def resize_image(x: Tensor, size: tuple[int, int], antialias: bool = True) -> Tensor:
    """Bilinear resize of a ``(C, H, W)`` image (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x[None].float(), size=size, mode="bilinear", align_corners=False, antialias=antialias)[0]


def resize_nearest(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a ``(C, H, W)`` tensor (pixel-centre aligned, like PIL); values stay exact."""
    if tuple(x.shape[-2:]) == size:
        return x
    out = F.interpolate(x[None].double(), size=size, mode="nearest-exact")[0]
    return out.to(x.dtype)


def resize_label(label: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of an ``(H, W)`` label map (pixel-centre aligned, like PIL)."""
    return resize_nearest(label[None], size)[0]


def _resize_sample(
    sample: PairedSample,
    size_of: Callable[[Tensor], tuple[int, int]],
    antialias: bool,
    nearest: Iterable[str],
) -> PairedSample:
    """Every modality to ``size_of(x)``: bilinear, or nearest for the names in ``nearest``; the label nearest."""
    nearest = set(nearest)
    images = {
        name: resize_nearest(x, size_of(x)) if name in nearest else resize_image(x, size_of(x), antialias)
        for name, x in sample.images.items()
    }
    label = None if sample.label is None else resize_label(sample.label, size_of(sample.label))
    return PairedSample(images, label)


def _rotation_grid(height: int, width: int, degrees: float) -> Tensor:
    """Sampling grid that rotates content counter-clockwise (as displayed) by ``degrees`` about the centre.

    Built in pixel units and converted to normalised coordinates, so non-square images rotate
    without shear.
    """
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    # output pixel -> source pixel is the inverse rotation [[c, -s], [s, c]] (y axis points down)
    theta = torch.tensor([[c, -s * height / width, 0.0], [s * width / height, c, 0.0]], dtype=torch.float64)
    grid = F.affine_grid(theta[None], [1, 1, height, width], align_corners=False)
    return grid.float()


def _sample(x: Tensor, grid: Tensor, mode: str) -> Tensor:
    return F.grid_sample(x[None], grid, mode=mode, padding_mode="zeros", align_corners=False)[0]


def rotate_image(x: Tensor, degrees: float, fill: float = 0.0, grid: Tensor | None = None) -> Tensor:
    """Bilinear rotation of ``(C, H, W)``; area from outside the image is blended with ``fill``.

    ``grid``: a precomputed :func:`_rotation_grid` for this size and angle (shared across modalities).
    """
    h, w = x.shape[-2:]
    grid = _rotation_grid(h, w, degrees) if grid is None else grid
    values = _sample(x.float(), grid, "bilinear")
    if fill == 0.0:
        return values
    inside = _sample(torch.ones(1, h, w), grid, "bilinear")
    return values + (1.0 - inside) * fill


def rotate_label(label: Tensor, degrees: float, fill: int = VOID, grid: Tensor | None = None) -> Tensor:
    """Nearest-neighbour rotation of an ``(H, W)`` label map; pixels from outside get ``fill``."""
    h, w = label.shape[-2:]
    grid = (_rotation_grid(h, w, degrees) if grid is None else grid).double()  # double: exact for any label id
    values = _sample(label[None].double(), grid, "nearest")[0]
    inside = _sample(torch.ones(1, h, w, dtype=torch.float64), grid, "nearest")[0]
    return torch.where(inside > 0.5, values, torch.full_like(values, fill)).round().to(label.dtype)


# ----------------------------------------------------------------------------- ops


@dataclass
class Compose:
    """Apply ``ops`` in order with the same generator."""

    ops: Sequence[PairedTransform]

    def __call__(self, sample: PairedSample, generator: torch.Generator) -> PairedSample:
        for op in self.ops:
            sample = op(sample, generator)
        return sample


@dataclass
class Resize:
    """Every modality (bilinear; nearest for those in ``nearest``) and the label (nearest) to ``size``."""

    size: Size
    antialias: bool = True
    #: modalities resampled with nearest neighbour (e.g. depth with 0 = invalid)
    nearest: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.size = as_size(self.size)

    def __call__(self, sample: PairedSample, generator: torch.Generator) -> PairedSample:
        size = as_size(self.size)
        return _resize_sample(sample, lambda x: size, self.antialias, self.nearest)


@dataclass
class RandomScale:
    """Scale by one factor drawn uniformly from ``[min_scale, max_scale]`` (each tensor keeps its aspect).

    ``base_size``: scale ``(H, W)`` instead of each tensor's own size, so every output has the
    size ``round(base_size · factor)`` (a resize to ``base_size`` and the random scale in one
    resampling). ``nearest``: modalities resampled with nearest neighbour instead of bilinear.
    """

    min_scale: float
    max_scale: float
    antialias: bool = True
    base_size: Size | None = None
    nearest: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")
        if self.base_size is not None:
            self.base_size = as_size(self.base_size)

    def __call__(self, sample: PairedSample, generator: torch.Generator) -> PairedSample:
        factor = _uniform(self.min_scale, self.max_scale, generator)
        base = None if self.base_size is None else as_size(self.base_size)

        def scaled(x: Tensor) -> tuple[int, int]:
            h, w = base if base is not None else x.shape[-2:]
            return max(1, round(h * factor)), max(1, round(w * factor))

        return _resize_sample(sample, scaled, self.antialias, self.nearest)


@dataclass
class RandomCrop:
    """A random ``size`` window at one offset for all modalities and the label.

    An image smaller than ``size`` is first padded evenly on both sides, images with
    ``pad_value`` (a float, or a mapping modality → float), the label with ``label_pad``.
    """

    size: Size
    pad_value: float | Mapping[str, float] = 0.0
    label_pad: int = VOID

    def __post_init__(self) -> None:
        self.size = as_size(self.size)

    def _pad_value(self, name: str) -> float:
        if isinstance(self.pad_value, Mapping):
            return float(self.pad_value.get(name, 0.0))
        return float(self.pad_value)

    def __call__(self, sample: PairedSample, generator: torch.Generator) -> PairedSample:
        th, tw = as_size(self.size)
        h, w = sample.spatial_size()
        ph, pw = max(0, th - h), max(0, tw - w)
        padding = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # left, right, top, bottom
        top = int(torch.randint(0, h + ph - th + 1, (), generator=generator))
        left = int(torch.randint(0, w + pw - tw + 1, (), generator=generator))
        images = {}
        for name, x in sample.images.items():
            if ph or pw:
                x = F.pad(x, padding, value=self._pad_value(name))
            images[name] = x[..., top : top + th, left : left + tw]
        label = sample.label
        if label is not None:
            if ph or pw:
                label = F.pad(label[None], padding, value=self.label_pad)[0]
            label = label[top : top + th, left : left + tw]
        return PairedSample(images, label)


@dataclass
class RandomRotation:
    """Rotate by one angle drawn uniformly from ``[-degrees, degrees]`` (or ``(low, high)``).

    Positive angles turn the content counter-clockwise as displayed. Images are bilinear with
    ``fill`` outside; the label is nearest with ``label_fill`` (void) outside.
    """

    degrees: float | tuple[float, float]
    fill: float = 0.0
    label_fill: int = VOID

    def _range(self) -> tuple[float, float]:
        if isinstance(self.degrees, int | float):
            return -abs(float(self.degrees)), abs(float(self.degrees))
        low, high = self.degrees
        return float(low), float(high)

    def __call__(self, sample: PairedSample, generator: torch.Generator) -> PairedSample:
        angle = _uniform(*self._range(), generator)
        grids: dict[tuple[int, int], Tensor] = {}

        def grid(t: Tensor) -> Tensor:
            size = (int(t.shape[-2]), int(t.shape[-1]))
            if size not in grids:
                grids[size] = _rotation_grid(*size, angle)
            return grids[size]

        return sample.map(
            lambda x: rotate_image(x, angle, self.fill, grid(x)),
            lambda y: rotate_label(y, angle, self.label_fill, grid(y)),
        )


@dataclass
class RandomHorizontalFlip:
    """Mirror left-right, with probability ``p``, every modality and the label together."""

    p: float = 0.5

    def __call__(self, sample: PairedSample, generator: torch.Generator) -> PairedSample:
        if float(torch.rand((), generator=generator)) >= self.p:
            return sample
        return sample.map(lambda x: x.flip(-1), lambda y: y.flip(-1))


_LUMA = (0.299, 0.587, 0.114)


def _grayscale(x: Tensor) -> Tensor:
    if x.shape[0] != 3:
        return x.mean(dim=0, keepdim=True)
    weights = torch.tensor(_LUMA, dtype=x.dtype).view(3, 1, 1)
    return (x * weights).sum(dim=0, keepdim=True)


@dataclass
class ColorJitter:
    """Photometric jitter of the named modalities only (0..255 scale), like torchvision's.

    Each named modality draws its own factors from ``[max(0, 1 − v), 1 + v]`` for brightness,
    contrast and saturation (applied in that order, clamped to ``[0, max_value]``); saturation
    only affects 3-channel images. Other modalities pass through untouched.
    """

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    modalities: tuple[str, ...] = ("rgb",)
    max_value: float = 255.0

    def _factor(self, amount: float, generator: torch.Generator) -> float:
        return _uniform(max(0.0, 1.0 - amount), 1.0 + amount, generator)

    def _jitter(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b, c, s = (self._factor(v, generator) for v in (self.brightness, self.contrast, self.saturation))
        x = (x.float() * b).clamp(0.0, self.max_value)
        mean = _grayscale(x).mean()
        x = (mean + (x - mean) * c).clamp(0.0, self.max_value)
        if x.shape[0] == 3:
            gray = _grayscale(x)
            x = (gray + (x - gray) * s).clamp(0.0, self.max_value)
        return x

    def __call__(self, sample: PairedSample, generator: torch.Generator) -> PairedSample:
        images = dict(sample.images)
        for name in self.modalities:
            if name in images:
                images[name] = self._jitter(images[name], generator)
        return PairedSample(images, sample.label)


@dataclass
class Normalize:
    """``(x − mean) / std`` on the named modalities (``None``: all); mean/std scalar or per channel.

    ``keep_zero``: values that are exactly 0 before normalisation stay 0 (invalid depth keeps
    one recognisable value instead of becoming ``−mean/std``).
    """

    mean: float | Sequence[float]
    std: float | Sequence[float]
    modalities: Iterable[str] | None = None
    keep_zero: bool = False

    def __post_init__(self) -> None:
        stds = [self.std] if isinstance(self.std, int | float) else list(self.std)
        if not all(s > 0 for s in stds):
            raise ValueError(f"std must be positive, got {self.std!r}")
        if self.modalities is not None:
            self.modalities = tuple(self.modalities)

    @staticmethod
    def _stat(value: float | Sequence[float], x: Tensor) -> Tensor:
        t = torch.as_tensor(value, dtype=x.dtype)
        return t.view(-1, *([1] * (x.dim() - 1))) if t.dim() else t

    def __call__(self, sample: PairedSample, generator: torch.Generator) -> PairedSample:
        images = dict(sample.images)
        for name, x in images.items():
            if self.modalities is None or name in self.modalities:
                x = x.float()
                images[name] = normalize(x, self._stat(self.mean, x), self._stat(self.std, x), self.keep_zero)
        return PairedSample(images, sample.label)
