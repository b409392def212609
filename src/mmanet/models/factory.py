"""Build the network a run configuration describes (Lightning-free: training and deployment share it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, cast

import torch
from torch import Tensor

from mmanet.config import ConfigError, ModelConfig, RunConfig
from mmanet.models.builder import build_network
from mmanet.models.heads import HEADS
from mmanet.models.network import MultimodalNet
from mmanet.task import TaskInfo


class _TakesResNetWeights(Protocol):
    """A module that loads a torchvision ResNet ``state_dict`` (the ``sf_resnet`` stems, the ``resnet_trunk``)."""

    def load_torchvision(self, state_dict: Mapping[str, Tensor]) -> object: ...


def default_head(info: TaskInfo) -> str:
    return "segmentation" if info.task == "segmentation" else "classification"


def build_net(model: ModelConfig | RunConfig, info: TaskInfo) -> MultimodalNet:
    """The :class:`MultimodalNet` of ``model`` (a model section or a whole run config) for data ``info``.

    Building errors that come from the configuration (an unknown encoder option, pyramids
    that cannot be fused, a head for the wrong task) are :class:`~mmanet.config.ConfigError` s.
    """
    if isinstance(model, RunConfig):
        model = model.model
    head = model.head.type if model.head.type != "auto" else default_head(info)
    head_cls = HEADS.get(head)
    if head_cls.task != info.task:
        raise ConfigError(f"model.head.type {head!r} predicts for {head_cls.task}, but the data is {info.task}")
    try:
        net = build_network(
            info.spec,
            info.input_shapes,
            info.num_classes,
            channels=model.channels,
            fusion=model.fusion.as_dict(),
            encoder=model.encoder.as_dict(),
            encoders={m: section.as_dict() for m, section in model.encoders.items()},
            head=head,
            head_options=model.head.options(),
            dropout=model.dropout,
            width=model.width,
        )
    except ValueError as err:
        raise ConfigError(f"invalid model configuration: {err}") from err
    except (TypeError, RuntimeError) as err:  # an option of the wrong type or an impossible size
        raise ConfigError(
            f"invalid model configuration: a component option has the wrong type or size ({err}); "
            "check the options of model.encoder, model.encoders, model.fusion and model.head"
        ) from err
    if model.pretrained:
        load_pretrained(net, model.pretrained)
    return net


def load_pretrained(net: MultimodalNet, path: str) -> list[str]:
    """Load a torchvision-format ResNet ``state_dict`` file into every module that can take it
    (each per-modality ``sf_resnet`` stem and the shared ``resnet_trunk``); nothing is downloaded."""
    from mmanet.deploy.checkpoint import non_finite_tensors
    from mmanet.models.backbones import StateDictMismatchError, load_state_dict_file

    try:
        state = load_state_dict_file(path)
    except (OSError, ImportError, ValueError) as err:  # missing, unreadable, not a state_dict
        raise ConfigError(f"model.pretrained={path}: {err}") from None
    bad = non_finite_tensors(state)
    if bad:
        raise ConfigError(
            f"model.pretrained={path} holds NaN or infinite weights ({len(bad)} tensor(s), first: {bad[0]}); the file "
            "is damaged or was saved after training diverged"
        )
    loaded = []
    for name, module in [*net.encoders.items(), ("head", net.head)]:
        if hasattr(module, "load_torchvision"):
            try:
                cast(_TakesResNetWeights, module).load_torchvision(state)
            except (StateDictMismatchError, TypeError) as err:
                raise ConfigError(f"model.pretrained={path} does not fit {name}: {err}") from None
            loaded.append(name)
    if not loaded:
        raise ConfigError(f"model.pretrained={path}: no module of this network takes ResNet weights")
    return loaded


def check_feature_name(net: MultimodalNet, name: str, key: str = "mad.feature") -> None:
    """A config error listing the valid names when ``name`` is not a feature ``net`` exposes."""
    if name not in net.feature_names:
        raise ConfigError(f"{key}: unknown feature {name!r}; this network exposes {list(net.feature_names)}")


def check_input_size(net: MultimodalNet, info: TaskInfo, size_key: str = "the inputs' size") -> None:
    """A :class:`~mmanet.config.ConfigError` naming ``size_key`` (e.g. ``data.options.image_size``) when the
    data's images are too small for the network: a forward pass of two zero samples (eval mode, no gradient,
    the network's own device) fails, or does not give ``(2, K)`` logits — ``(2, K, H, W)`` with the images'
    ``(H, W)`` for segmentation. Networks without image inputs are not checked."""
    images = {m: shape for m, shape in info.input_shapes.items() if len(shape) == 3}
    if not images:
        return
    device = next(net.parameters()).device
    inputs = {m: torch.zeros(2, *info.input_shapes[m], device=device) for m in info.spec.names}
    present = torch.ones(2, len(info.spec), dtype=torch.bool, device=device)
    sizes = sorted({tuple(shape[1:]) for shape in images.values()})
    described = " and ".join("×".join(str(d) for d in size) for size in sizes)
    training = net.training
    net.eval()
    try:
        with torch.no_grad():
            logits = net(inputs, present)
    except (RuntimeError, ValueError) as err:  # a kernel larger than the map, a size mismatch in a decoder …
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{size_key}: the network cannot take images of {described} pixels ({reason}); use larger images"
        ) from None
    finally:
        net.train(training)
    expected = (2, info.num_classes) if info.task == "classification" else (2, info.num_classes, *sizes[0])
    if tuple(logits.shape) != expected:
        raise ConfigError(
            f"{size_key}: for images of {described} pixels the network predicts logits of shape "
            f"{tuple(logits.shape)[1:]} per sample instead of {expected[1:]}: the images are too small for it (or "
            "not a size its decoder restores); use larger images"
        )
