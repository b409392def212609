"""The SF network (CASIA-SURF): per-modality ResNet-18 stems + SE, fusion, shared layer3/layer4 trunk."""

from __future__ import annotations

import pytest
import torch
from test_backbones import fabricated_state_dict

from mmanet.config import resolve_run_config
from mmanet.modality import ModalitySpec, all_combinations
from mmanet.models.builder import build_network
from mmanet.models.factory import build_net
from mmanet.models.fusion import FUSIONS
from mmanet.task import TaskInfo

SPEC = ModalitySpec(("rgb", "depth", "ir"))


def info(size: int = 32, channels: dict | None = None) -> TaskInfo:
    channels = channels or {}
    return TaskInfo(SPEC, 2, {m: (channels.get(m, 3), size, size) for m in SPEC.names}, bona_fide_class=1)


def sf_config(**model):
    return resolve_run_config(
        {
            "method": "sf_md",
            "model": {"channels": None, "width": 8, "encoder": {"type": "sf_resnet"}, "head": {"type": "resnet_trunk"}}
            | model,
        }
    )


def test_paper_scale_parameter_count_and_shapes():
    net = build_network(
        SPEC, info(112).input_shapes, 2, channels=None, encoder="sf_resnet", head="resnet_trunk", width=64
    )
    assert sum(p.numel() for p in net.parameters()) == 13_205_594  # BASELINES.md: about 13.2 M at M = 3
    assert net.encoders["rgb"].feature_info[-1].channels == 128 and net.fusion.out_channels == 384
    out = net.eval().forward_all({m: torch.randn(2, 3, 112, 112) for m in SPEC.names}, torch.ones(2, 3, dtype=bool))
    assert out.features[0].shape == (2, 3, 128, 14, 14)  # the SE features fused at 1/8
    assert out.feature("trunk").shape == (2, 512, 4, 4) and out.logits.shape == (2, 2)


@pytest.mark.parametrize("fusion", sorted(FUSIONS.keys()))
def test_every_fusion_runs_on_the_sf_network(fusion):
    torch.manual_seed(0)
    net = build_net(sf_config(fusion=fusion), info(32))
    inputs = {m: torch.randn(4, 3, 32, 32) for m in SPEC.names}
    for combo in all_combinations(SPEC):
        mask = combo.mask().expand(4, -1).clone()
        logits = net.train()(inputs, mask)
        assert logits.shape == (4, 2) and torch.isfinite(logits).all(), combo.name
    evaluated = net.eval().predict_all(
        inputs, torch.ones(4, 3, dtype=bool), torch.stack([c.mask() for c in all_combinations(SPEC)])
    )
    assert evaluated.logits.shape == (7, 4, 2)


def test_pretrained_torchvision_weights_land_in_every_stem_and_the_trunk(tmp_path):
    state = fabricated_state_dict(width=8, seed=3)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    net = build_net(sf_config(pretrained=str(path)), info(32, channels={"depth": 1}))
    for m in SPEC.names:
        enc = net.encoders[m]
        torch.testing.assert_close(enc.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
        torch.testing.assert_close(enc.layer2[1].bn2.running_var, state["layer2.1.bn2.running_var"])
    torch.testing.assert_close(net.encoders["rgb"].stem.conv1.weight, state["conv1.weight"])
    # depth has one input channel: the RGB kernel summed over its channels (helper's "sum" mode)
    torch.testing.assert_close(net.encoders["depth"].stem.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(net.head.layer4[0].conv2.weight, state["layer4.0.conv2.weight"])
    torch.testing.assert_close(net.head.layer3[1].conv1.weight, state["layer3.1.conv1.weight"])
    # layer3's first block takes the 3·16 fused channels: it cannot take torchvision's 16-channel conv
    assert net.head.layer3[0].conv1.weight.shape[1] == 48
    with pytest.raises(Exception, match="resnet"):
        build_net(
            sf_config(pretrained=str(path), encoder={"type": "cnn"}, head={"type": "classification"}, channels=8),
            info(32),
        )
