"""Build the network a run configuration describes (Lightning-free: training and deployment share it)."""

from __future__ import annotations

from mmanet.config import ConfigError, ModelConfig, RunConfig
from mmanet.models.heads import HEADS
from mmanet.models.network import MultimodalNet, build_network
from mmanet.task import TaskInfo


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
            fusion=model.fusion,
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
            "check the options of model.encoder, model.encoders and model.head"
        ) from err
    if model.pretrained:
        load_pretrained(net, model.pretrained)
    return net


def load_pretrained(net: MultimodalNet, path: str) -> list[str]:
    """Load a torchvision-format ResNet ``state_dict`` file into every module that can take it
    (each per-modality ``sf_resnet`` stem and the shared ``resnet_trunk``); nothing is downloaded."""
    from mmanet.models.backbones import load_state_dict_file

    state = load_state_dict_file(path)
    loaded = []
    for name, module in [*net.encoders.items(), ("head", net.head)]:
        if hasattr(module, "load_torchvision"):
            module.load_torchvision(state)
            loaded.append(name)
    if not loaded:
        raise ConfigError(f"model.pretrained={path}: no module of this network takes ResNet weights")
    return loaded


def check_feature_name(net: MultimodalNet, name: str, key: str = "mad.feature") -> None:
    """A config error listing the valid names when ``name`` is not a feature ``net`` exposes."""
    if name not in net.feature_names:
        raise ConfigError(f"{key}: unknown feature {name!r}; this network exposes {list(net.feature_names)}")
