"""MAR mining on the training side (DESIGN §4.2): the data pass, the DDP reduction, the callback.

:func:`mine_discrepancies` runs the deployment network in eval mode over the mining split,
with the network's batched pass over the candidates (full + leave-one-out: each batch is
encoded once), sums the class probabilities per candidate (:func:`~mmanet.losses.mar.probability_sums`),
all-reduces sums and counts across processes, and returns ``D_c``. :class:`MARMiningCallback`
does this after each warm-up epoch and records it in the module's miner — before the
checkpoint callbacks of that epoch run, so the saved checkpoint holds the updated memory bank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor, nn

from mmanet.losses.mar import DEFAULT_IGNORE_INDEX, candidate_discrepancies, probability_sums
from mmanet.modality import Combination, combinations_to_mask


def _all_reduce(*tensors: Tensor) -> list[Tensor]:
    if not (dist.is_available() and dist.is_initialized()):
        return list(tensors)
    packed = torch.cat([t.flatten().double() for t in tensors])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    out, offset = [], 0
    for t in tensors:
        out.append(packed[offset : offset + t.numel()].view_as(t).to(t.dtype))
        offset += t.numel()
    return out


@torch.no_grad()
def mine_discrepancies(
    net: nn.Module,
    loader: Iterable,
    candidates: list[Combination],
    *,
    ignore_index: int = DEFAULT_IGNORE_INDEX,
    eps: float = 1e-8,
) -> tuple[dict[str, float], dict[str, int]]:
    """``D_c`` for every candidate after the first (the full combination), and the skipped counts.

    ``loader`` yields ``(inputs, present, target)``. Samples without any modality of a
    candidate are skipped for it. The network is put in eval mode; its modules' training
    flags are restored afterwards.
    """
    modes = [(module, module.training) for module in net.modules()]
    net.eval()
    param = next(iter(net.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    masks = combinations_to_mask(candidates, device=device)
    sums = counts = skipped = None
    try:
        for inputs, present, target in loader:
            inputs = {k: v.to(device) for k, v in inputs.items()}
            present = present.to(device).bool()
            target = target.to(device)
            out = net.predict_all(inputs, present, masks)
            dense_target = target if out.logits.dim() > 3 else None
            s, c = probability_sums(out.logits, out.valid, dense_target, ignore_index=ignore_index)
            n_skipped = (~out.valid).sum(dim=1).double()
            sums, counts = (s, c) if sums is None else (sums + s, counts + c)
            skipped = n_skipped if skipped is None else skipped + n_skipped
    finally:
        for module, mode in modes:
            module.training = mode
    if sums is None:
        raise ValueError("the mining loader yielded no batch")
    sums, counts, skipped = _all_reduce(sums, counts, skipped)
    empty = [c.name for c, n in zip(candidates, counts.tolist(), strict=True) if n == 0]
    if empty:
        raise ValueError(
            f"no sample of the mining split has a modality of candidate(s) {empty}; "
            "cannot form their prediction distributions"
        )
    kl = candidate_discrepancies(sums, counts, eps)
    discrepancies = {c.name: float(v) for c, v in zip(candidates[1:], kl.tolist(), strict=True)}
    return discrepancies, {c.name: int(s) for c, s in zip(candidates, skipped.tolist(), strict=True)}


class MARMiningCallback(L.Callback):
    """After each warm-up epoch e < ω: mine ``D_c`` and record it in ``pl_module.miner``; log ``mar/kl_*``."""

    def __init__(self, loader_factory: Callable[[], Iterable], warmup_epochs: int) -> None:
        self.loader_factory = loader_factory
        self.warmup_epochs = warmup_epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        miner = getattr(pl_module, "miner", None)
        if miner is None or trainer.current_epoch >= self.warmup_epochs:
            return
        discrepancies, _ = mine_discrepancies(
            pl_module.net, self.loader_factory(), miner.candidates, ignore_index=miner.ignore_index, eps=miner.eps
        )
        miner.record(trainer.current_epoch, discrepancies)
        for name, value in discrepancies.items():
            pl_module.log(f"mar/kl_{name}", float(value), on_epoch=True, sync_dist=False)
