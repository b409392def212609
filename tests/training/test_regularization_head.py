"""MAR's regularization head with every registered head (BatchNorm included) at an awkward batch: B = 4
with exactly one weak row — the case that crashed both image workloads when the head ran on the weak
rows only. The head runs on the whole batch; the term is ``(1/B) Σ_i m_i CE_i`` (paper) or the authors'
form (official), computed here independently; every parameter of the head gets a gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_wiring import step_context

from mmanet.config import resolve_run_config
from mmanet.losses import mar_loss, mar_loss_official
from mmanet.methods.base import labels_at
from mmanet.modality import ModalitySpec
from mmanet.models.factory import build_net
from mmanet.models.heads import HEADS
from mmanet.task import TaskInfo
from mmanet.training.module import MultimodalModule
from mmanet.training.teacher import FrozenTeacher

SPEC = ModalitySpec(("a", "b"))
#: per registered head: the encoder that feeds it, the input shape, the task
HEAD_SETUPS = {
    "classification": ({"type": "mlp", "hidden": 8}, (6,), "classification"),
    "resnet_trunk": ({"type": "sf_resnet"}, (3, 32, 32), "classification"),
    "esanet_decoder": ({"type": "resnet"}, (3, 32, 32), "segmentation"),
    "segmentation": ({"type": "cnn", "pool": False}, (3, 16, 16), "segmentation"),
}


def test_every_registered_head_is_covered():
    assert set(HEAD_SETUPS) == set(HEADS.keys())


def _module(head: str, variant: str, class_weights: torch.Tensor | None = None):
    encoder, shape, task = HEAD_SETUPS[head]
    info = TaskInfo(SPEC, 3, {"a": shape, "b": shape}, task=task, ignore_index=255 if task == "segmentation" else None)
    channels = 8 if head in ("classification", "segmentation") else None  # the others keep the ResNet widths
    config = resolve_run_config(
        {
            "method": "sr",  # SR: the single-modality combinations are the weak set, no mining needed
            "model": {"width": 4, "channels": channels, "encoder": encoder,
                      "head": {"type": head}, "fusion": "concat" if task == "classification" else "se_add",
                      "dropout": 0.1},
            "mad": {"variant": "off"},
            "mar": {"beta": 1.0, "warmup_epochs": 1, "variant": variant},
        }
    )  # fmt: skip
    torch.manual_seed(0)
    teacher = FrozenTeacher(build_net(config, info))
    module = MultimodalModule(build_net(config, info), config, info, teacher=teacher, class_weights=class_weights)
    return module.train(), info


def _batch(info: TaskInfo, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = info.input_shapes["a"]
    inputs = {m: torch.randn(4, *shape, generator=g) for m in SPEC.names}
    if info.task == "segmentation":
        target = torch.randint(0, info.num_classes, (4, *shape[1:]), generator=g)
        target[0, 1, 1] = 255  # one void pixel (a 1×1 side output still sees a label)
    else:
        target = torch.randint(0, info.num_classes, (4,), generator=g)
    return inputs, torch.ones(4, 2, dtype=torch.bool), target


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("head", sorted(HEAD_SETUPS))
def test_one_weak_row_with_every_head(head, variant, at_epoch):
    weights = torch.linspace(0.5, 1.5, 3) if HEAD_SETUPS[head][2] == "segmentation" else None
    module, info = _module(head, variant, weights)
    inputs, present, target = _batch(info)
    mask = torch.tensor([[True, False], [True, True], [True, True], [True, True]])  # row 0 alone is weak
    at_epoch(1)
    out = module.net.forward_all(inputs, mask)
    weak = module.method.mar.weak_mask(mask, epoch=1)
    assert weak.tolist() == [True, False, False, False]
    torch.manual_seed(3)
    got = module.method.mar.term(step_context(module, inputs, present, mask, target, out), weak, weights)
    torch.manual_seed(3)  # the same dropout draws in the independent pass
    reg = module.reg_head(out.fused)  # the head on the whole batch, BatchNorm in training mode
    if variant == "paper":
        expected = mar_loss(reg.logits, target, weak, ignore_index=module.ignore_index)
    elif info.task == "segmentation":  # the authors' loss: the weak rows' weighted CE at every scale
        expected = sum(
            F.cross_entropy(s[:1], labels_at(s, target)[:1], weight=weights, ignore_index=255)
            for s in [reg.logits, *reg.aux_logits]
        )
    else:
        expected = mar_loss_official(reg.logits, target, weak)
    torch.testing.assert_close(got, expected)
    assert torch.isfinite(got) and got > 0
    module.zero_grad()
    step = step_context(module, inputs, present, mask, target, module.net.forward_all(inputs, mask))
    module.method.mar.term(step, weak, weights).backward()
    missing = [n for n, p in module.reg_head.named_parameters() if p.grad is None]
    assert not missing, f"parameters of the regularization head without gradient: {missing[:5]}"


@pytest.mark.parametrize("head", sorted(HEAD_SETUPS))
def test_a_whole_training_step_with_one_weak_row_and_a_batch_of_two(head, at_epoch):
    """The full step (task, deep supervision, MAR) with B = 2, one of them weak: BatchNorm everywhere."""
    module, info = _module(head, "paper")
    inputs, present, target = _batch(info)
    batch = ({k: v[:2] for k, v in inputs.items()}, present[:2], target[:2])
    at_epoch(1)
    module.dropout = lambda present: torch.tensor([[False, True], [True, True]])  # row 0 keeps b alone
    module.log = lambda *args, **kwargs: None
    total = module.training_step(batch, 0)
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in module.reg_head.parameters())
