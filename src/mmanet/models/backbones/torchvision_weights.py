"""Loading torchvision-format ResNet weights into the blocks of :mod:`.resnet` (nothing is downloaded).

:func:`load_state_dict_file` reads a ``state_dict`` file (``.pth``/``.pt`` with ``weights_only=True``, or
``.safetensors``); :func:`load_torchvision_resnet` maps torchvision's key names (``conv1.``, ``bn1.``,
``layerN.``) into the given modules, checks every key and shape before copying anything (a
:class:`StateDictMismatchError` names what does not fit), and adapts ``conv1`` to other input channel
counts; :func:`torchvision_resnet_depth` recognises a file's depth from its keys.
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
    "LoadSummary",
    "StateDictMismatchError",
    "TORCHVISION_PREFIX_MAP",
    "load_state_dict_file",
    "load_torchvision_resnet",
    "torchvision_resnet_depth",
]


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
