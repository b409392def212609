"""ResNet building blocks (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

Plain ``torch.nn`` pieces, written so that the module names — and therefore the
``state_dict`` keys — coincide with torchvision's ResNet-18/34 (:class:`BasicBlock`) and
ResNet-50 (:class:`Bottleneck`): ``conv1``, ``bn1``, ``layer1.0.conv1.weight``,
``layer2.0.downsample.1.running_mean``, ``layer3.5.bn3.running_var``, ... torchvision itself is
not a dependency: :func:`load_torchvision_resnet` maps such a ``state_dict`` (read with
:func:`load_state_dict_file`) into the modules built here.

Also the squeeze-and-excitation gate of Hu et al., "Squeeze-and-Excitation Networks",
CVPR 2018, used by the SF baseline (after each modality's layer2) and by ESANet's fusion.

Everything here is deterministic under ``torch.use_deterministic_algorithms(True)`` on CUDA
(global pooling is a ``mean``, not ``AdaptiveAvgPool2d``, whose CUDA backward is flagged
non-deterministic).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "RESNET_LAYERS",
    "BasicBlock",
    "Bottleneck",
    "LoadSummary",
    "RESNET_BLOCKS",
    "SqueezeExcitation",
    "StateDictMismatchError",
    "TORCHVISION_PREFIX_MAP",
    "init_resnet_weights",
    "load_state_dict_file",
    "load_torchvision_resnet",
    "make_layer",
    "resnet_layers",
    "resnet_stem",
    "resnet_widths",
    "torchvision_resnet_depth",
]

#: Blocks per stage (He et al. 2016, Table 1); the block type of each depth is :data:`RESNET_BLOCKS`.
RESNET_LAYERS: dict[int, tuple[int, int, int, int]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def resnet_widths(width: int = 64, expansion: int = 1) -> tuple[int, int, int, int]:
    """Output channels of layer1..layer4: ``expansion · width · (1, 2, 4, 8)``.

    ``expansion`` is the block's (:attr:`BasicBlock.expansion` = 1: 64 → torchvision's
    64/128/256/512 for ResNet-18/34; :attr:`Bottleneck.expansion` = 4: 256/512/1024/2048 for
    ResNet-50).
    """
    base = expansion * width
    return (base, 2 * base, 4 * base, 8 * base)


def init_resnet_weights(module: nn.Module, zero_init_residual: bool = False) -> None:
    """He (Kaiming) normal init, fan-out, for every conv; BatchNorm γ = 1, β = 0.

    With ``zero_init_residual`` the last BN of each residual branch (``bn2`` of a :class:`BasicBlock`,
    ``bn3`` of a :class:`Bottleneck`) starts at γ = 0, so every residual block is the identity
    at initialisation (Goyal et al. 2017).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
            elif isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)


class BasicBlock(nn.Module):
    """The two-3×3-conv residual block of ResNet-18/34 (He et al. 2016, Fig. 2).

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; ``conv1`` carries the stride. The
    shortcut is the identity, or ``downsample = Sequential(1×1 conv (stride), BN)`` ("option B")
    when the stride or channel count changes. Module names match torchvision's, so its keys
    (``conv1.weight``, ``bn2.running_var``, ``downsample.0.weight`` ...) load directly.
    """

    #: output channels / channels of the 3×3 convs (1: ``out_ch`` throughout)
    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        self.in_channels = in_ch
        self.out_channels = out_ch
        self.stride = stride
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """The 1×1–3×3–1×1 residual block of ResNet-50/101/152 (He et al. 2016, Fig. 5), torchvision's "v1.5".

    ``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))`` with
    ``planes = out_ch // 4``: ``conv1`` 1×1 ``in_ch → planes``, ``conv2`` 3×3 ``planes → planes``
    carrying the stride (v1.5; the original paper strides the first 1×1), ``conv3`` 1×1
    ``planes → out_ch = 4·planes``. The shortcut is the identity, or ``downsample =
    Sequential(1×1 conv (stride), BN)`` when the stride or channel count changes (in ResNet-50
    also block 0 of layer1: 64 → 256 channels at stride 1). Same signature as
    :class:`BasicBlock` (``out_ch`` is the block's OUTPUT width), same init; module names match
    torchvision's, so ``conv3.weight``, ``bn3.running_var``, ``downsample.0.weight`` ... load
    directly.
    """

    expansion = 4

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        if out_ch % self.expansion or out_ch < self.expansion:
            raise ValueError(f"a bottleneck's out_ch must be a positive multiple of {self.expansion}, got {out_ch}")
        planes = out_ch // self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        self.in_channels = in_ch
        self.planes = planes
        self.out_channels = out_ch
        self.stride = stride
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


#: The residual block of each depth in :data:`RESNET_LAYERS`.
RESNET_BLOCKS: dict[int, type[BasicBlock] | type[Bottleneck]] = {18: BasicBlock, 34: BasicBlock, 50: Bottleneck}


class _Stem(nn.Module):
    def __init__(self, in_channels: int, width: int, kernel_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size, stride=2, padding=kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.in_channels = in_channels
        self.out_channels = width
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_pre_pool(self, x: Tensor) -> Tensor:
        """``relu(bn1(conv1(x)))`` at 1/2 resolution — ESANet fuses here, before the max-pool."""
        return self.relu(self.bn1(self.conv1(x)))


def resnet_stem(in_channels: int = 3, width: int = 64, kernel_size: int = 7) -> nn.Module:
    """ResNet stem (He et al. 2016): ``conv1`` (k×k, stride 2, pad k//2, no bias) → ``bn1`` → ``relu`` → ``maxpool``.

    ``maxpool`` is 3×3 stride 2 pad 1, so the output is at 1/4 resolution with ``width`` channels
    (``ceil(ceil(H/2)/2)``). ``kernel_size=7`` is torchvision's stem (loadable from its weights);
    ``kernel_size=3`` gives a lighter stem for small inputs (its ``conv1`` cannot take pretrained
    7×7 weights). The module also has ``forward_pre_pool(x)`` for the 1/2-resolution features.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    return _Stem(in_channels, width, kernel_size)


def make_layer(
    in_ch: int,
    out_ch: int,
    blocks: int,
    stride: int = 1,
    *,
    block: type[BasicBlock] | type[Bottleneck] = BasicBlock,
) -> nn.Sequential:
    """One ResNet stage: ``blocks`` residual blocks, the first with ``stride`` (and the downsample).

    Indexed ``0..blocks-1`` like torchvision's ``layerN``; ``out_ch`` is the stage's output width
    and ``block`` :class:`BasicBlock` (default) or :class:`Bottleneck` (whose 3×3 convs then have
    ``out_ch // 4`` channels). ResNet-18 uses ``RESNET_LAYERS[18] = (2, 2, 2, 2)``, ResNet-34
    ``(3, 4, 6, 3)``, ResNet-50 ``(3, 4, 6, 3)`` bottlenecks, widths :func:`resnet_widths`,
    stride 1 for layer1 and 2 for layer2..4 (see :func:`resnet_layers`).
    """
    if blocks < 1:
        raise ValueError(f"a layer needs at least one block, got {blocks}")
    return nn.Sequential(block(in_ch, out_ch, stride), *(block(out_ch, out_ch, 1) for _ in range(blocks - 1)))


def resnet_layers(depth: int, width: int = 64) -> list[nn.Sequential]:
    """layer1..layer4 of a ResNet of ``depth`` (a key of :data:`RESNET_LAYERS`) after a ``width``-channel stem.

    Strides 1, 2, 2, 2 (so 1/4 … 1/32 of the input after :func:`resnet_stem`); output channels
    ``resnet_widths(width, block.expansion)``. At ``width=64`` the keys and shapes are those of
    torchvision's ``resnet{depth}().layerN``.
    """
    if depth not in RESNET_LAYERS:
        raise ValueError(f"resnet depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
    block = RESNET_BLOCKS[depth]
    layers, in_ch = [], width
    for i, (n, out_ch) in enumerate(zip(RESNET_LAYERS[depth], resnet_widths(width, block.expansion), strict=True)):
        layers.append(make_layer(in_ch, out_ch, n, stride=1 if i == 0 else 2, block=block))
        in_ch = out_ch
    return layers


class SqueezeExcitation(nn.Module):
    """Channel gate of Hu et al. (SE-Net, CVPR 2018): ``x · σ(fc2(ReLU(fc1(GAP x))))``.

    ``fc1``/``fc2`` are 1×1 convolutions with bias (C → max(1, C // reduction) → C), as ESANet
    uses them. Works for any ``(B, C, *S)`` input — maps ``(B, C, H, W)`` or vectors ``(B, C)``
    (where the "pooling" is the identity). The pooling is a ``mean`` (deterministic on CUDA).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.channels = channels
        self.hidden = hidden

    def gate(self, x: Tensor) -> Tensor:
        """The excitation weights σ(...) ∈ (0, 1), shaped ``(B, C, 1, ..., 1)`` to broadcast against ``x``."""
        b, c = x.shape[:2]
        squeezed = x.reshape(b, c, -1).mean(dim=-1)[:, :, None, None]
        weights = torch.sigmoid(self.fc2(self.relu(self.fc1(squeezed))))
        return weights.reshape((b, c) + (1,) * (x.dim() - 2))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


# --------------------------------------------------------------------------------------------
# Loading torchvision-format weights
# --------------------------------------------------------------------------------------------

#: Default mapping: torchvision key prefix → destination ``"<module name>.<prefix inside it>"``.
TORCHVISION_PREFIX_MAP: dict[str, str] = {
    "conv1.": "stem.conv1.",
    "bn1.": "stem.bn1.",
    "layer1.": "layer1.",
    "layer2.": "layer2.",
    "layer3.": "layer3.",
    "layer4.": "layer4.",
}

_IGNORED_SOURCE_PREFIXES = ("fc.",)
_MAX_LISTED = 12


def _listing(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


class StateDictMismatchError(RuntimeError):
    """A ``state_dict`` does not fit the target modules; ``missing``/``unexpected``/``mismatched`` name the keys.

    ``hint`` (optional) says what is wrong in words, e.g. that the file holds another ResNet depth.
    """

    def __init__(
        self,
        missing: Sequence[str],
        unexpected: Sequence[str],
        mismatched: Sequence[str],
        hint: str | None = None,
    ) -> None:
        self.missing = tuple(missing)
        self.unexpected = tuple(unexpected)
        self.mismatched = tuple(mismatched)
        self.hint = hint
        parts = [hint] if hint else []
        if self.missing:
            parts.append(f"missing from the state_dict (target keys): {_listing(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected in the state_dict (no target): {_listing(self.unexpected)}")
        if self.mismatched:
            parts.append(f"shape mismatch: {_listing(self.mismatched)}")
        super().__init__("cannot load torchvision ResNet weights; " + "; ".join(parts) + " (nothing was loaded)")


@dataclass(frozen=True)
class LoadSummary:
    """What :func:`load_torchvision_resnet` did.

    ``loaded``: destination keys (``"<module>.<key>"``) that received a tensor; ``adapted``: those
    whose tensor was transformed (conv1 input channels); ``ignored``: source keys deliberately not
    used (``fc.*``, or a prefix whose destination module was not given); ``missing`` /
    ``unexpected`` / ``mismatched``: problems tolerated because ``strict=False`` (always empty
    with ``strict=True``, which raises instead).
    """

    loaded: tuple[str, ...]
    adapted: tuple[str, ...]
    ignored: tuple[str, ...]
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        modules = sorted({key.split(".", 1)[0] for key in self.loaded})
        text = f"loaded {len(self.loaded)} tensors into {', '.join(modules) or 'nothing'}"
        if self.adapted:
            text += f"; adapted {_listing(list(self.adapted))}"
        if self.ignored:
            text += f"; ignored {len(self.ignored)} source keys"
        for name in ("missing", "unexpected", "mismatched"):
            keys = getattr(self, name)
            if keys:
                text += f"; {name}: {_listing(list(keys))}"
        return text


def _adapt_input_channels(weight: Tensor, in_channels: int, mode: str) -> Tensor:
    grey = weight.mean(dim=1, keepdim=True)
    scale = weight.shape[1] / in_channels if mode == "sum" else 1.0
    return grey.expand(-1, in_channels, -1, -1) * scale


def load_torchvision_resnet(
    state_dict: Mapping[str, Tensor],
    modules: Mapping[str, nn.Module],
    prefix_map: Mapping[str, str | None] | None = None,
    *,
    strict: bool = True,
    conv1_mode: Literal["sum", "mean"] = "sum",
) -> LoadSummary:
    """Copy a torchvision-format ResNet-18/34/50 ``state_dict`` into the given modules.

    Args:
        state_dict: torchvision keys (``conv1.weight``, ``bn1.running_mean``,
            ``layer1.0.conv1.weight``, ``layer3.0.downsample.1.weight``, ``fc.weight`` ...).
        modules: destination modules by name, e.g. ``{"stem": resnet_stem(),
            "layer1": make_layer(64, 64, 2), ...}``. Names must not contain dots.
        prefix_map: source prefix → destination ``"<module name>.<prefix inside that module>"``;
            default :data:`TORCHVISION_PREFIX_MAP` (``conv1.`` → ``stem.conv1.``, ``bn1.`` →
            ``stem.bn1.``, ``layerN.`` → ``layerN.``). The longest matching source prefix wins;
            a prefix mapped to ``None`` is deliberately ignored. Source keys whose destination
            module is not in ``modules`` are ignored too (so giving only ``{"stem", "layer1",
            "layer2"}`` with the default map loads a partial encoder), as is ``fc.*``; a source
            key matching no prefix is unexpected.
        strict: raise :class:`StateDictMismatchError` on any missing (a destination tensor that
            nothing fills), unexpected (a source key with no prefix or no such destination key)
            or shape-mismatched key. Validation happens before any copy: on error nothing is
            modified. With ``strict=False`` the loadable tensors are copied and the problems are
            returned in the summary. A missing ``num_batches_tracked`` (older checkpoints) is not
            an error.
        conv1_mode: how the source ``conv1.weight`` (RGB, ``(out, 3, k, k)``) is adapted when the
            destination conv has ``C != 3`` input channels (e.g. 1 for depth): the kernel is
            averaged over the RGB axis and replicated to the C channels; ``"sum"`` (default) then
            scales by ``3 / C``, so the kernel's sum over input channels equals the RGB kernel's —
            for C = 1 that is the sum of the RGB kernels, and an input whose C channels all equal
            a grey image ``g`` gives the same response as the RGB network on ``(g, g, g)``, which
            keeps the pretrained ``bn1`` statistics meaningful; ``"mean"`` skips the scaling.

    Returns:
        A :class:`LoadSummary`.
    """
    if conv1_mode not in ("sum", "mean"):
        raise ValueError(f"conv1_mode must be 'sum' or 'mean', got {conv1_mode!r}")
    prefix_map = dict(TORCHVISION_PREFIX_MAP if prefix_map is None else prefix_map)
    for name in modules:
        if "." in name or not name:
            raise ValueError(f"module names must be non-empty and dot-free, got {name!r}")
    targeted = {dest.split(".", 1)[0] for dest in prefix_map.values() if dest is not None}
    untargeted = sorted(set(modules) - targeted)
    if untargeted:
        raise ValueError(
            f"modules {untargeted} are not the destination of any prefix in prefix_map "
            f"(destinations: {sorted(targeted)}); check the names"
        )
    targets: dict[str, Tensor] = {}
    for name, module in modules.items():
        for key, tensor in module.state_dict(keep_vars=True).items():
            targets[f"{name}.{key}"] = tensor

    prefixes = sorted(prefix_map, key=len, reverse=True)
    plan: list[tuple[str, str, Tensor, bool]] = []  # (source key, destination key, value, adapted)
    ignored: list[str] = []
    unexpected: list[str] = []
    mismatched: list[str] = []
    filled: set[str] = set()
    for src_key, value in state_dict.items():
        if src_key.startswith(_IGNORED_SOURCE_PREFIXES):
            ignored.append(src_key)
            continue
        prefix = next((p for p in prefixes if src_key.startswith(p)), None)
        if prefix is None:
            unexpected.append(src_key)
            continue
        dest_prefix = prefix_map[prefix]
        if dest_prefix is None:
            ignored.append(src_key)
            continue
        dest_key = dest_prefix + src_key[len(prefix) :]
        if dest_key.split(".", 1)[0] not in modules:
            ignored.append(src_key)
            continue
        if dest_key not in targets:
            unexpected.append(f"{src_key} (-> {dest_key})")
            continue
        if not isinstance(value, Tensor):
            raise TypeError(f"state_dict[{src_key!r}] is a {type(value).__name__}, not a tensor")
        target = targets[dest_key]
        adapted = False
        if (
            src_key == "conv1.weight"
            and value.dim() == 4
            and target.dim() == 4
            and value.shape[1] == 3
            and target.shape[1] != 3
            and value.shape[0] == target.shape[0]
            and value.shape[2:] == target.shape[2:]
        ):
            value = _adapt_input_channels(value, target.shape[1], conv1_mode)
            adapted = True
        if value.shape != target.shape:
            mismatched.append(f"{src_key} -> {dest_key}: source {tuple(value.shape)} vs target {tuple(target.shape)}")
            filled.add(dest_key)  # reported as mismatched, not also as missing
            continue
        plan.append((src_key, dest_key, value, adapted))
        filled.add(dest_key)
    missing = [key for key in targets if key not in filled and not key.endswith("num_batches_tracked")]
    if strict and (missing or unexpected or mismatched):
        raise StateDictMismatchError(missing, unexpected, mismatched)

    with torch.no_grad():
        for _, dest_key, value, _ in plan:
            target = targets[dest_key]
            target.copy_(value.to(device=target.device, dtype=target.dtype))
    return LoadSummary(
        loaded=tuple(dest for _, dest, _, _ in plan),
        adapted=tuple(dest for _, dest, _, adapted in plan if adapted),
        ignored=tuple(ignored),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        mismatched=tuple(mismatched),
    )


#: torchvision's ResNets by (bottleneck?, blocks per stage) — recognised in a state_dict, not all buildable here.
_TORCHVISION_DEPTHS: dict[tuple[bool, tuple[int, ...]], int] = {
    (False, (2, 2, 2, 2)): 18,
    (False, (3, 4, 6, 3)): 34,
    (True, (3, 4, 6, 3)): 50,
    (True, (3, 4, 23, 3)): 101,
    (True, (3, 8, 36, 3)): 152,
}


def torchvision_resnet_depth(state_dict: Mapping[str, Tensor]) -> int | None:
    """The depth (18, 34, 50, 101, 152) of the torchvision ResNet a ``state_dict`` holds, from its keys.

    Counts the blocks of ``layer1..layer4`` and looks for bottleneck keys (``layerN.i.conv3.*``);
    ``None`` when the keys fit none of torchvision's ResNets (a partial or foreign ``state_dict``).
    Only the key set is read: the width is not checked.
    """
    blocks = [0, 0, 0, 0]
    bottleneck = False
    for key in state_dict:
        parts = key.split(".")
        if len(parts) < 3 or parts[0] not in ("layer1", "layer2", "layer3", "layer4") or not parts[1].isdigit():
            continue
        stage = int(parts[0][-1]) - 1
        blocks[stage] = max(blocks[stage], int(parts[1]) + 1)
        bottleneck = bottleneck or parts[2] == "conv3"
    return _TORCHVISION_DEPTHS.get((bottleneck, tuple(blocks)))


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a ``state_dict`` from ``.pth``/``.pt`` (``torch.load(weights_only=True)``, to CPU) or ``.safetensors``.

    ``safetensors`` is imported only for ``.safetensors`` files (it is not a dependency). A
    checkpoint that wraps the weights as ``{"state_dict": ...}`` or ``{"model": ...}`` is
    unwrapped, and a ``module.`` prefix on every key (DataParallel/DDP) is stripped.

    Raises:
        FileNotFoundError: no such file.
        ImportError: a ``.safetensors`` file but the ``safetensors`` package is not installed.
        ValueError: the file is corrupt/unreadable or holds no tensor mapping (the message
            names the file).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"weights file not found: {file}")
    if file.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ImportError(
                f"reading {file} needs the 'safetensors' package (pip install safetensors), "
                "or convert the weights to a .pth file"
            ) from exc
        try:
            obj: object = load_file(str(file), device="cpu")
        except Exception as exc:  # any failure means the file is unusable
            raise ValueError(f"could not read safetensors weights file {file}: {exc}") from exc
    else:
        try:
            obj = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle / zip / EOF errors all mean a corrupt file
            from mmanet.deploy.checkpoint import load_failure_reason  # (never torch's advice to load it unsafely)

            raise ValueError(
                f"could not read weights file {file} (corrupt, or not a torch checkpoint: {load_failure_reason(exc)}); "
                "only plain tensors are loaded, so no code in it was run"
            ) from None

    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"weights file {file} does not contain a state_dict (got {type(obj).__name__})")
    bad = [str(key) for key, value in obj.items() if not isinstance(key, str) or not isinstance(value, Tensor)]
    if bad:
        raise ValueError(f"weights file {file} has non-tensor entries: {_listing(bad)}")
    state = dict(obj)
    if all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state
