"""The encoder/fusion/head contracts on mixed pyramids, BatchNorm encoders and a segmentation head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmanet.config import resolve_run_config
from mmanet.data.base import ArrayMultimodalDataset, DataBundle
from mmanet.modality import ModalitySpec
from mmanet.models.builder import build_network
from mmanet.models.encoders import ENCODERS, Encoder, FeatureInfo, build_encoder
from mmanet.models.network import plan_levels
from mmanet.training import run

SPEC = ModalitySpec(("img", "vec"))
SHAPES = {"img": (1, 8, 8), "vec": (5,)}


def bundle(task: str = "classification", n: int = 48, seed: int = 0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    img = torch.randn(n, 1, 8, 8, generator=g) + y[:, None, None, None].float()
    vec = torch.randn(n, 5, generator=g) + y[:, None].float()
    if task == "segmentation":
        target = (img[:, 0] > img[:, 0].mean()).long()
        target[:, 0] = 255  # a void row
        k, ignore = 2, 255
    else:
        target, k, ignore = y, 3, None
    present = torch.ones(n, 2, dtype=torch.bool)
    present[::4, 1] = False
    parts = [slice(0, 32), slice(32, 40), slice(40, 48)]

    def split(s):
        return ArrayMultimodalDataset(SPEC, {"img": img[s], "vec": vec[s]}, target[s], present[s])

    return DataBundle("mixed", SPEC, task, k, *(split(s) for s in parts), ignore_index=ignore)


def test_declared_feature_info_before_any_forward():
    cnn = build_encoder("cnn", (1, 8, 8), 6, hidden=4, pool=False)
    assert cnn.feature_info == [FeatureInfo(4, 1), FeatureInfo(8, 2), FeatureInfo(6, 4)]
    levels = cnn(torch.randn(2, 1, 8, 8))
    assert [tuple(x.shape[1:]) for x in levels] == [(4, 8, 8), (8, 4, 4), (6, 2, 2)]
    pooled = build_encoder("cnn", (1, 8, 8), 6, hidden=4)
    assert pooled.feature_info[-1] == FeatureInfo(6, None) and pooled(torch.randn(2, 1, 8, 8))[-1].shape == (2, 6)
    for name in ENCODERS:  # every registered encoder declares what it returns
        shape = {"mlp": (5,), "gru": (7, 3), "tcn": (7, 3)}.get(name, (1, 8, 8))
        enc = build_encoder(name, shape, 6)
        out = enc(torch.randn(2, *shape))
        assert len(out) == len(enc.feature_info)
        for x, info in zip(out, enc.feature_info, strict=True):
            assert x.shape[1] == info.channels and (x.dim() == 2) == info.is_global
    with pytest.raises(ValueError, match=r"has no option\(s\) \['depth'\]; valid options"):
        build_encoder("mlp", (5,), 6, depth=3)


def test_mixed_pyramids_are_aligned_at_the_last_level():
    net = build_network(SPEC, SHAPES, 3, channels=6, encoders={"img": {"type": "cnn", "pool": False, "hidden": 4}})
    assert len(net.encoders["img"].feature_info) == 3 and len(net.encoders["vec"].feature_info) == 1
    assert [p.pooled for p in net.plans] == [(True, False)]  # the image map is pooled to meet the vector
    out = net.forward_all(
        {"img": torch.randn(4, 1, 8, 8), "vec": torch.randn(4, 5)}, torch.ones(4, 2, dtype=torch.bool)
    )
    assert out.features[0].shape == (4, 2, 6) and out.logits.shape == (4, 3)
    with pytest.raises(ValueError, match="equally deep pyramids"):
        plan_levels(SPEC, {"img": net.encoders["img"].feature_info, "vec": net.encoders["vec"].feature_info}, "all")
    with pytest.raises(ValueError, match="equal channels"):
        plan_levels(SPEC, {"img": [FeatureInfo(4, None)], "vec": [FeatureInfo(6, None)]}, "last")


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_one_training_epoch_and_evaluation_on_different_pyramids(task, tmp_path):
    """The whole pipeline (train, validate, test tables) on encoders with different pyramids."""
    encoders = {"img": {"type": "cnn", "pool": False, "hidden": 4}}
    data = bundle(task)
    if task == "segmentation":  # a dense head needs maps from every modality: a second image modality
        encoders["vec"] = {"type": "cnn", "pool": False, "hidden": 4}
        for split in (data.train, data.val, data.test):
            split.arrays["vec"] = split.arrays["img"].flip(-1).clone()
    config = resolve_run_config(
        {
            "method": "mmanet",
            "data": {"name": "toy", "batch_size": 16},
            "model": {"channels": 6, "encoders": encoders, "head": {"type": "auto"}},
            "train": {"max_epochs": 2, "progress_bar": False},
            "mar": {"warmup_epochs": 1},
            "teacher": {"max_epochs": 1},
            "mad": {"feature": "fused", "allow_concat_fused": True},
        }
    )
    if task == "segmentation":  # per-pixel MAD and segmentation MAR are wired by the segmentation work
        config = config.model_copy(update={"method": "sf_md", "stage": "unified"})
    result = run(config, tmp_path / task, bundle=data)
    table = result.table
    assert len(table.rows) == 3 and table.metric == ("miou" if task == "segmentation" else "error")
    assert all(0 <= v[table.metric] <= 100 for _, v in table.rows)


class BatchNormEncoder(Encoder):
    """A vector encoder whose training-mode output mixes rows (BatchNorm)."""

    def __init__(self, input_shape, out_channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_shape[0], out_channels), nn.BatchNorm1d(out_channels))
        self.feature_info = [FeatureInfo(out_channels, None)]

    def forward(self, x, lengths=None):
        return [self.net(x)]


def test_batchnorm_encoder_runs_on_present_rows_only():
    ENCODERS._items.setdefault("bn_test", BatchNormEncoder)
    torch.manual_seed(0)
    net = build_network(SPEC, {"img": (5,), "vec": (5,)}, 3, channels=4, encoder="bn_test").train()
    assert not net.encoders["img"].row_independent
    inputs = {"img": torch.randn(8, 5), "vec": torch.randn(8, 5)}
    mask = torch.ones(8, 2, dtype=torch.bool)
    mask[:3, 0] = False  # img absent in rows 0..2
    reference = net.encode(inputs, mask)[0]
    changed = {"img": inputs["img"].clone(), "vec": inputs["vec"]}
    changed["img"][:3] = 1e3 * torch.randn(3, 5)  # absent rows' content must not move the batch statistics
    torch.testing.assert_close(net.encode(changed, mask)[0][3:], reference[3:])
    assert torch.equal(reference[:3, 0], torch.zeros(3, 4))
    # without the mask the absent rows would enter BatchNorm's statistics
    assert not torch.allclose(net.encode(changed)[0][3:, 0], reference[3:, 0])
    # every parameter still gets a gradient when a modality is absent from the whole batch
    mask[:, 0] = False
    net.fuse_predict(net.encode(inputs, mask), mask).logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_component_options_of_the_wrong_type_are_config_errors():
    from mmanet.config import ConfigError
    from mmanet.models.factory import build_net
    from mmanet.task import TaskInfo

    info = TaskInfo(SPEC, 3, SHAPES)
    for bad in ({"encoder": {"type": "mlp", "hidden": [1, 2]}}, {"head": {"type": "classification", "hidden": {}}}):
        with pytest.raises(ConfigError, match="wrong type or size"):
            build_net(resolve_run_config({"model": {"encoders": {"img": "cnn"}, **bad}}), info)
    with pytest.raises(ConfigError, match="less than or equal"):
        resolve_run_config({"model": {"channels": 10**16}})


@pytest.mark.parametrize("fusion", ["se_add", "concat", "hemis", "lcr", "rfnet", "mmformer", "shaspec", "dmrnet"])
def test_every_fusion_runs_at_every_level_of_the_segmentation_network(fusion):
    from mmanet.models.fusion import FUSIONS

    assert fusion in FUSIONS
    spec = ModalitySpec(("rgb", "depth"))
    torch.manual_seed(0)
    net = build_network(
        spec, {"rgb": (3, 64, 64), "depth": (1, 64, 64)}, 5, channels=None, encoder="resnet",
        head="esanet_decoder", fusion=fusion, width=4,
    )  # fmt: skip
    assert len(net.fusions) == 4  # one fusion per pyramid level
    inputs = {"rgb": torch.randn(3, 3, 64, 64), "depth": torch.randn(3, 1, 64, 64)}
    mask = torch.tensor([[True, False], [False, True], [True, True]])
    out = net.train().forward_all(inputs, mask)
    loss = out.logits.square().mean() + sum(a.square().mean() for a in out.aux_logits)
    aux = net.auxiliary_losses(out, torch.zeros(3, 64, 64, dtype=torch.long), torch.nn.functional.cross_entropy)
    loss = loss + sum(aux.values(), torch.zeros(()))
    loss.backward()
    assert out.logits.shape == (3, 5, 64, 64) and torch.isfinite(out.logits).all()
    assert all(p.grad is not None for p in net.parameters())
