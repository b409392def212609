"""The MMANet family (mmanet.methods.mmanet): its MAD term, in classification and per pixel, with the
configured variant, reduction, features and pooling, each against an independent computation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from conftest import tiny_raw
from mmanet.config import resolve_run_config
from mmanet.losses import mad_loss
from mmanet.models.factory import build_net
from mmanet.training.factory import load_bundle, task_info
from mmanet.training.module import MultimodalModule
from mmanet.training.teacher import FrozenTeacher
from step_helpers import setup


def test_classification_mad_uses_the_configured_variant(tiny_config):
    _, module, (inputs, present, _) = setup(tiny_config, "sp", mad__reduction="sum")
    out, t_out = module.net.forward_all(inputs, present), module.teacher.net.forward_all(inputs, present)
    expected = mad_loss(out.embedding, t_out.embedding, t_out.logits, variant="sp", reduction="sum")
    torch.testing.assert_close(module.method.mad_term(out, t_out), expected)


def test_segmentation_mad_without_pool_size_uses_the_whole_map_and_the_configured_form(rooms_sr):
    module, (inputs, present, _) = rooms_sr
    out = module.net.forward_all(inputs, present)
    t_out = module.teacher.net.forward_all(inputs, present)
    got = module.method.mad_term(out, t_out)
    student, teacher = out.feature("decoder"), t_out.feature("decoder")
    expected = mad_loss(student, teacher, t_out.logits, variant="sp", per_pixel=True, reduction="sum")
    torch.testing.assert_close(got, expected)
    paper_mean = mad_loss(student, teacher, t_out.logits, per_pixel=True, reduction="mean")
    assert abs(got - paper_mean) > 1e-3 * got  # variant and reduction must reach the loss


# ----------------------------------------------------------------------------- several MAD features (issue 19)


def test_several_mad_features_are_summed_each_pooled_to_at_most_the_pool_size(at_epoch):
    rooms = {"num_train": 4, "num_val": 2, "num_test": 2, "height": 64, "width": 96, "augment": False}
    esanet = {"encoder": {"type": "resnet"}, "head": {"type": "esanet_decoder"}, "fusion": "se_add"}
    features = ["context", "skip16", "skip8"]
    mad = {"alpha": 1.0, "variant": "official", "reduction": "sum", "row_normalization": "column_halves",
           "feature": features, "pool_size": [3, 5]}  # fmt: skip
    cfg = resolve_run_config(
        tiny_raw("mad", data={"name": "rooms", "options": rooms, "batch_size": 4},
                 model={**esanet, "width": 4, "channels": None, "dropout": 0.0}, mad=mad)
    )  # fmt: skip
    bundle = load_bundle(cfg)
    info = task_info(bundle)
    torch.manual_seed(0)
    module = MultimodalModule(build_net(cfg, info), cfg, info, teacher=FrozenTeacher(build_net(cfg, info))).train()
    inputs, present, _ = next(iter(torch.utils.data.DataLoader(bundle.train, batch_size=4)))
    out = module.net.forward_all(inputs, present)
    t_out = module.teacher.net.forward_all(inputs, present)
    sizes = {name: tuple(out.feature(name).shape[2:]) for name in features}
    assert sizes == {"context": (2, 3), "skip16": (4, 6), "skip8": (8, 12)}  # 1/32, 1/16, 1/8 of 64×96
    expected = 0.0
    for name, pooled in zip(features, [(2, 3), (3, 5), (3, 5)], strict=True):  # at most 3×5 per side
        s, t = out.feature(name), t_out.feature(name)
        if pooled != tuple(s.shape[2:]):
            s, t = F.adaptive_avg_pool2d(s, pooled), F.adaptive_avg_pool2d(t, pooled)
        expected = expected + mad_loss(
            s, t, t_out.logits, variant="official", per_pixel=True, reduction="sum", row_normalization="column_halves"
        )
    torch.testing.assert_close(module.method.mad_term(out, t_out), expected)
