"""Performance benchmarks of issue #11: one ``BENCH <name> ratio=<float> target=<float> <details>`` line each.

Usage::

    python benchmarks/run.py [--quick] [--only NAME[,NAME…]]
    python benchmarks/run.py --profile {mfeat,image} [--profile-out DIR]

Every ratio compares two measurements taken in THIS process, interleaved (A, B, B, A, …) after a
warm-up, as the median of the per-repeat ratios (robust to load drift on a shared machine).
Torch runs on ONE intra-op thread (``torch.set_num_threads(1)`` and ``OMP_NUM_THREADS=1``, fixed
and printed): on a shared 2-core machine two threads under contention are ~10x slower and noisy.

Lines (docs/performance.md explains each):

* ``eval_all_combinations`` — PerCombinationEvaluator with all 7 combinations ÷ with only the full one,
  SF image network (3 × 3×112×112, width 64, 13.2 M parameters), synthetic images. The encoders run
  once per batch, and so does the head's split prefix (concat fusion: layer3's first conv and
  downsample per modality, ``MultimodalNet.predict_combinations``); the rest of the trunk runs once
  per combination, so by FLOPs the ratio cannot go below ``(E + P + 7R) / (E + T)`` (E: the 3
  encoders, T: fusion + trunk, P: the split prefix, R: the rest + the sum of the partials; MACs
  counted with forward hooks). The line prints that floor (and the one without the split,
  ``(E + 7T) / (E + T)``) and says when the target is below it.
* ``eval_all_combinations_mfeat`` — the same on mfeat (63 combinations, configs/mfeat/sf_md.yaml).
* ``mar_mining`` (mfeat, train split) and ``mar_mining_sf`` (SF image network, synthetic) — one
  mine_discrepancies pass over full + leave-one-out candidates ÷ one full-modality inference pass.
* ``train_step_overhead`` — MMANet training step (teacher forward in inference mode, MAD, MAR
  regularization head, weak set active) ÷ SF-MD step, SF image network, same batch and dropout
  masks; training_step + backward + optimizer step (configs/casia_surf/{mmanet,sf_md}.yaml).
* ``mad_memory`` — peak extra resident memory of per-pixel MAD forward + backward (N = 9600 pixels,
  C = 64), block-wise (``mad_loss(per_pixel=True)``) ÷ a dense autograd implementation; each
  variant in its own subprocess (see :func:`mad_child` for the method); the details give the relative
  difference of loss and gradient.
* ``naive_vs_shared`` / ``naive_vs_shared_mfeat`` — one evaluator (encode + fuse + head) per
  combination ÷ the shared path, both with metrics; for information.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported: one OpenMP thread
os.environ["MKL_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

THREADS = 1
torch.set_num_threads(THREADS)

from mmanet.config import RunConfig, resolve_run_config  # noqa: E402
from mmanet.data import ArrayMultimodalDataset, DataBundle, collate_samples, load_dataset  # noqa: E402
from mmanet.losses import mad_loss  # noqa: E402
from mmanet.methods.mar import mine_discrepancies, mining_loader  # noqa: E402
from mmanet.metrics import PerCombinationEvaluator  # noqa: E402
from mmanet.modality import ModalitySpec, all_combinations, leave_one_out_combinations  # noqa: E402
from mmanet.models.factory import build_net  # noqa: E402
from mmanet.models.network import MultimodalNet, build_network  # noqa: E402
from mmanet.task import TaskInfo  # noqa: E402
from mmanet.training.factory import make_loader, task_info  # noqa: E402
from mmanet.training.module import MultimodalModule  # noqa: E402
from mmanet.training.teacher import FrozenTeacher  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SF_SPEC = ModalitySpec(("rgb", "depth", "ir"))
SF_SHAPES = {m: (3, 112, 112) for m in SF_SPEC.names}
SF_WIDTH = 64

warnings.filterwarnings("ignore", message=".*self.log.*")  # training_step called without a Trainer
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


# ----------------------------------------------------------------------------------------------- helpers


@dataclass
class Pair:
    """Interleaved timings of A and B (seconds)."""

    a: list[float]
    b: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(x / y for x, y in zip(self.a, self.b, strict=True))

    @property
    def a_ms(self) -> float:
        return 1e3 * statistics.median(self.a)

    @property
    def b_ms(self) -> float:
        return 1e3 * statistics.median(self.b)

    def describe(self, a: str, b: str) -> str:
        return f"{a}={self.a_ms:.1f}ms {b}={self.b_ms:.1f}ms repeats={len(self.a)}"


def time_pair(fa: Callable[[], object], fb: Callable[[], object], repeats: int, warmup: int = 1) -> Pair:
    """Warm-up, then ``repeats`` interleaved timings of ``fa`` and ``fb`` (the order alternates)."""
    for _ in range(warmup):
        fa()
        fb()
    ta: list[float] = []
    tb: list[float] = []
    for i in range(repeats):
        order = ((fa, ta), (fb, tb)) if i % 2 == 0 else ((fb, tb), (fa, ta))
        for fn, acc in order:
            gc.collect()
            start = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - start)
    return Pair(ta, tb)


def bench(name: str, ratio: float, target: float, details: str, info: bool = False) -> None:
    status = "info" if info else "pass" if ratio <= target else "MISS"
    print(f"BENCH {name} ratio={ratio:.3f} target={target:g} status={status} {details}", flush=True)


def count_macs(modules: nn.Module | list[nn.Module], fn: Callable[[], object]) -> int:
    """Multiply-accumulates of the Conv/Linear layers inside ``modules`` while ``fn`` runs (forward hooks)."""
    modules = modules if isinstance(modules, list) else [modules]
    total = 0

    def conv(m: nn.Conv2d | nn.Conv1d, _inp, out) -> None:
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear(m: nn.Linear, _inp, out) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    handles = []
    for root in modules:
        for m in root.modules():
            if isinstance(m, nn.Conv2d | nn.Conv1d):
                handles.append(m.register_forward_hook(conv))
            elif isinstance(m, nn.Linear):
                handles.append(m.register_forward_hook(linear))
    try:
        with torch.no_grad():
            fn()
    finally:
        for h in handles:
            h.remove()
    return total


def encoder_head_macs(net: MultimodalNet, inputs: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(E, T): MACs per sample of all encoders and of one fuse + head pass (full combination)."""
    b = next(iter(inputs.values())).shape[0]
    present = torch.ones(b, len(net.spec), dtype=torch.bool)
    was = net.training
    net.eval()
    e = count_macs(list(net.encoders.values()), lambda: net.encode(inputs, present))
    with torch.no_grad():
        features = net.encode(inputs, present)
    t = count_macs([*net.fusions, net.head], lambda: net.fuse_predict(features, present))
    net.train(was)
    return e // b, t // b


def floor_of(e: int, t: int, n: int) -> float:
    """FLOP floor of encode-once + n head passes ÷ encode + 1 head pass."""
    return (e + n * t) / (e + t)


@dataclass(frozen=True)
class CombinationMacs:
    """MACs per sample of the all-combination path: encoders ``e``, one fuse + head pass ``t``, and with
    the head's split prefix (concat fusion): the prefix ``p`` (once per batch) and the rest ``r`` (per
    combination: the sum of the M partials, M·|partial| multiply-adds, + ``forward_from_partials``).
    Without a split path ``p = 0`` and ``r = t``."""

    e: int
    t: int
    p: int
    r: int

    def floor(self, n: int) -> float:
        """FLOP floor of ``predict_combinations`` with n combinations ÷ one full-modality pass."""
        return (self.e + self.p + n * self.r) / (self.e + self.t) if n > 1 else 1.0

    def describe(self, scale: float, unit: str) -> str:
        def f(value: int) -> str:
            return f"{value / scale:.3g}{unit}/sample"

        split = f" split_prefix={f(self.p)}(once) rest={f(self.r)}(per_combination)" if self.p else ""
        return f"E={f(self.e)} T={f(self.t)}{split}"


def combination_macs(net: MultimodalNet, inputs: dict[str, torch.Tensor]) -> CombinationMacs:
    """:class:`CombinationMacs` of ``net`` (eval mode; forward hooks on Conv/Linear, see :func:`count_macs`)."""
    e, t = encoder_head_macs(net, inputs)
    b = next(iter(inputs.values())).shape[0]
    was = net.training
    net.eval()
    with torch.no_grad():
        features = net.encode(inputs, torch.ones(b, len(net.spec), dtype=torch.bool))[-1]
        partials = net.head.split_prefix(features) if net.fusion.masked_concat and len(net.fusions) == 1 else None
    net.train(was)
    if partials is None:
        return CombinationMacs(e, t, 0, t)
    summed = partials.sum(dim=1)
    rest = count_macs(net.head, lambda: net.head.forward_from_partials(summed)) // b
    return CombinationMacs(e, t, t - rest, rest + partials[0].numel())


def floor_note(target: float, floor: float, ratio: float, unsplit: float | None = None) -> str:
    """The FLOP floor (and, when the split prefix lowered it, the floor without the split), and whether the
    target is below it. A time ratio well below the floor means per-call overhead, not arithmetic,
    dominates the measurement (the floor then binds less)."""
    note = f"flop_floor={floor:.2f}"
    if ratio < 0.75 * floor:
        note += "(time_ratio_well_below_it:partly_overhead-bound)"
    if unsplit is not None and unsplit != floor:
        note += f" flop_floor_without_split={unsplit:.2f}"
    if target < floor:
        note += " TARGET_BELOW_FLOP_FLOOR(the_head_after_its_split_prefix_runs_once_per_combination)"
    return note


def combination_note(macs: CombinationMacs, n: int, target: float, ratio: float, scale: float, unit: str) -> str:
    """MACs and FLOP floors of a line that runs n combinations against one full pass."""
    floor, unsplit = macs.floor(n), floor_of(macs.e, macs.t, n)
    return f"{macs.describe(scale, unit)} {floor_note(target, floor, ratio, unsplit)}"


# ----------------------------------------------------------------------------------------------- data, networks


def sf_network(seed: int = 0) -> MultimodalNet:
    torch.manual_seed(seed)
    return build_network(SF_SPEC, SF_SHAPES, 2, channels=None, encoder="sf_resnet", head="resnet_trunk", width=SF_WIDTH)


def sf_one() -> dict[str, torch.Tensor]:
    """One random sample of the SF network's inputs (for MAC counting)."""
    return {m: torch.randn(1, *SF_SHAPES[m]) for m in SF_SPEC.names}


def sf_images(n: int, seed: int = 0) -> ArrayMultimodalDataset:
    g = torch.Generator().manual_seed(seed)
    arrays = {m: torch.randn((n, *SF_SHAPES[m]), generator=g) for m in SF_SPEC.names}
    return ArrayMultimodalDataset(SF_SPEC, arrays, torch.randint(0, 2, (n,), generator=g))


def sf_loader(n: int, batch: int) -> DataLoader:
    return DataLoader(sf_images(n), batch_size=batch, collate_fn=collate_samples)


def sf_evaluator(combos) -> PerCombinationEvaluator:
    return PerCombinationEvaluator(SF_SPEC, 2, combos, bona_fide_class=1)  # ACER, as CASIA-SURF


def config_of(path: str, **overrides) -> RunConfig:
    raw = yaml.safe_load((ROOT / path).read_text())
    for key, value in overrides.items():
        node = raw
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return resolve_run_config(raw, source=path)


_MFEAT: tuple[DataBundle, TaskInfo] | None = None


def mfeat() -> tuple[DataBundle, TaskInfo]:
    global _MFEAT
    if _MFEAT is None:
        bundle = load_dataset("mfeat")
        _MFEAT = bundle, task_info(bundle)
    return _MFEAT


def mfeat_one(info: TaskInfo) -> dict[str, torch.Tensor]:
    """One random mfeat sample (for MAC counting)."""
    return {m: torch.randn(1, *shape) for m, shape in info.input_shapes.items()}


def mfeat_net(cfg: RunConfig, info: TaskInfo) -> MultimodalNet:
    torch.manual_seed(0)
    return build_net(cfg, info).eval()


def full_pass(net: MultimodalNet, loader) -> Callable[[], None]:
    """One full-modality inference pass (eval mode, no autograd) over ``loader``."""

    def run() -> None:
        net.eval()
        with torch.no_grad():
            for inputs, present, _ in loader:
                net(inputs, present)

    return run


# ----------------------------------------------------------------------------------------------- benchmarks


def b_eval_sf(q: bool) -> None:
    n, batch = (32, 16) if q else (128, 16)
    net = sf_network().eval()
    loader = sf_loader(n, batch)
    combos = all_combinations(SF_SPEC)
    every, full = sf_evaluator(combos), sf_evaluator([SF_SPEC.full])
    pair = time_pair(lambda: every.evaluate(net, loader), lambda: full.evaluate(net, loader), 3 if q else 5)
    macs = combination_macs(net, sf_one())
    bench(
        "eval_all_combinations",
        pair.ratio,
        1.5,
        f"net=sf_resnet+resnet_trunk width={SF_WIDTH} input=3x3x112x112 data=synthetic N={n} batch={batch} "
        f"combinations={len(combos)} {pair.describe('all', 'full')} "
        f"{combination_note(macs, len(combos), 1.5, pair.ratio, 1e9, 'GMAC')}",
    )


def b_eval_mfeat(q: bool) -> None:
    bundle, info = mfeat()
    cfg = config_of("configs/mfeat/sf_md.yaml")
    net = mfeat_net(cfg, info)
    loader = make_loader(bundle.test, cfg, train=False)
    combos = all_combinations(info.spec)
    every, full = info.evaluator(combos), info.evaluator([info.spec.full])
    pair = time_pair(lambda: every.evaluate(net, loader), lambda: full.evaluate(net, loader), 7 if q else 15)
    macs = combination_macs(net, mfeat_one(info))
    bench(
        "eval_all_combinations_mfeat",
        pair.ratio,
        3.0,
        f"data=mfeat_test N={len(bundle.test)} batch={cfg.data.batch_size} combinations={len(combos)} "
        f"{pair.describe('all', 'full')} {combination_note(macs, len(combos), 3.0, pair.ratio, 1e3, 'kMAC')}",
    )


def b_mining_mfeat(q: bool) -> None:
    bundle, info = mfeat()
    cfg = config_of("configs/mfeat/mmanet.yaml")
    net = mfeat_net(cfg, info)
    loader = mining_loader(bundle, cfg)
    candidates = [info.spec.full, *leave_one_out_combinations(info.spec)]
    pair = time_pair(lambda: mine_discrepancies(net, loader, candidates), full_pass(net, loader), 7 if q else 15)
    bench(
        "mar_mining",
        pair.ratio,
        1.3,
        f"data=mfeat_train N={len(loader.dataset)} batch={cfg.data.batch_size} candidates={len(candidates)} "
        f"(full+leave-one-out) {pair.describe('mining', 'inference')} "
        f"{combination_note(combination_macs(net, mfeat_one(info)), len(candidates), 1.3, pair.ratio, 1e3, 'kMAC')}",
    )


def b_mining_sf(q: bool) -> None:
    n, batch = (32, 16) if q else (64, 16)
    net = sf_network().eval()
    loader = sf_loader(n, batch)
    candidates = [SF_SPEC.full, *leave_one_out_combinations(SF_SPEC)]
    pair = time_pair(
        lambda: mine_discrepancies(net, loader, candidates, ignore_index=-100), full_pass(net, loader), 3 if q else 5
    )
    bench(
        "mar_mining_sf",
        pair.ratio,
        1.3,
        f"net=sf_resnet+resnet_trunk width={SF_WIDTH} data=synthetic N={n} batch={batch} "
        f"candidates={len(candidates)} {pair.describe('mining', 'inference')} "
        f"{combination_note(combination_macs(net, sf_one()), len(candidates), 1.3, pair.ratio, 1e9, 'GMAC')}",
    )


class _BenchModule(MultimodalModule):
    """A module driven without a Trainer: a settable epoch, and print without a Trainer."""

    epoch = 0

    @property
    def current_epoch(self) -> int:  # type: ignore[override]
        return self.epoch

    def print(self, *args, **kwargs) -> None:
        pass


def _optimizer(module: MultimodalModule) -> torch.optim.Optimizer:
    """The optimizer ``configure_optimizers`` builds (its scheduler is not needed here)."""
    setup = module.configure_optimizers()
    return setup["optimizer"] if isinstance(setup, dict) else setup


def b_train_step(q: bool) -> None:
    batch_size = 8 if q else 16
    info = TaskInfo(SF_SPEC, 2, dict(SF_SHAPES), bona_fide_class=1)
    sfmd_cfg = config_of("configs/casia_surf/sf_md.yaml")
    mma_cfg = config_of("configs/casia_surf/mmanet.yaml")
    torch.manual_seed(0)
    sfmd = _BenchModule(build_net(sfmd_cfg, info), sfmd_cfg, info).train()
    teacher = FrozenTeacher(build_net(mma_cfg, info))
    mma = _BenchModule(build_net(mma_cfg, info), mma_cfg, info, teacher=teacher).train()
    # MAR active: epoch ω with a mined weak set (the memory bank filled with made-up discrepancies)
    mma.epoch = mma_cfg.mar.warmup_epochs
    miner = mma.method.mar.miner
    miner.record(0, {c.name: float(i) for i, c in enumerate(miner.leave_one_out)})
    mma.method.on_train_epoch_start(mma.epoch, lambda _message: None)
    g = torch.Generator().manual_seed(1)
    inputs = {m: torch.randn((batch_size, *SF_SHAPES[m]), generator=g) for m in SF_SPEC.names}
    present = torch.ones(batch_size, len(SF_SPEC), dtype=torch.bool)
    target = torch.randint(0, 2, (batch_size,), generator=g)
    batch = (inputs, present, target)

    def step(module: MultimodalModule) -> Callable[[], None]:
        opt = _optimizer(module)

        def run() -> None:
            torch.manual_seed(0)  # every step draws the same modality-dropout masks, in both modules
            opt.zero_grad(set_to_none=True)
            loss = module.training_step(batch, 0)
            loss.backward()
            opt.step()

        return run

    pair = time_pair(step(mma), step(sfmd), 3 if q else 5)
    # FLOP estimate: backward ≈ 2 × forward; the student encoders run on the kept rows only, the
    # teacher forward on every row, the regularization head (forward + backward) on every row (its
    # BatchNorm needs the whole batch; the cross-entropy is masked to the weak rows)
    torch.manual_seed(0)
    mask = sfmd.dropout(present)  # the mask every timed step used
    kept = float(mask.float().mean())
    weak = float(mma.method.mar.weak_mask(mask, mma.epoch).float().mean())
    e, t = encoder_head_macs(sfmd.net, sf_one())
    base = 3 * (kept * e + t)
    floor = (base + (e + t) + 3 * t) / base
    # the teacher's forward alone: inference_mode (as FrozenTeacher) vs no_grad, for information
    with torch.no_grad():
        tg = _median_time(lambda: teacher.net.forward_all(inputs, present), 3)
    with torch.inference_mode():
        ti = _median_time(lambda: teacher.net.forward_all(inputs, present), 3)
    bench(
        "train_step_overhead",
        pair.ratio,
        1.4,
        f"net=sf_resnet+resnet_trunk width={SF_WIDTH} input=3x3x112x112 batch={batch_size}"
        f"{'(quick;full_run_uses_16)' if q else ''} steps=training_step+backward+optimizer(sgd) "
        f"{pair.describe('mmanet', 'sf_md')} mad={mma_cfg.mad.variant}(feature={'+'.join(mma_cfg.mad.features)}) "
        f"mar=mined(active) "
        f"teacher_fwd_inference_mode={ti * 1e3:.0f}ms teacher_fwd_no_grad={tg * 1e3:.0f}ms kept_rows={kept:.2f} "
        f"weak_rows={weak:.2f} "
        f"est_flop_floor={floor:.2f}(bwd=2xfwd){' TARGET_BELOW_FLOP_FLOOR' if floor > 1.4 else ''}",
    )


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- MAD memory: one subprocess per variant


MAD_SHAPE = (6, 64, 40, 40)  # B, C, H, W: N = B·H·W = 9600 pixel rows of C = 64
MAD_CLASSES = 10


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _dense_mad(fs: torch.Tensor, ft: torch.Tensor, logits: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The per-pixel MAD ("paper" variant) written densely with plain autograd: the N×N relations whole."""
    c = fs.shape[1]
    rs = fs.permute(0, 2, 3, 1).reshape(-1, c)
    rt = ft.permute(0, 2, 3, 1).reshape(-1, c)
    p = torch.softmax(logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1]), dim=1)
    u = -(p * torch.log(p + eps)).sum(dim=1)
    w = u / (u.sum() + eps)
    ns = torch.linalg.vector_norm(rs, dim=1)
    a_s = (rs @ rs.T) / (ns[:, None] * ns[None, :] + eps)
    with torch.no_grad():
        nt = torch.linalg.vector_norm(rt, dim=1)
        a_t = (rt @ rt.T) / (nt[:, None] * nt[None, :] + eps)
    return ((a_t - a_s).pow(2).sum(dim=1) * w).sum()


def mad_child(variant: str, out: str, dtype: str) -> None:
    """Peak extra resident memory of one MAD forward + backward (this process only).

    Method: the parent starts this process with ``MALLOC_MMAP_THRESHOLD_=65536`` so that every
    tensor buffer of 64 KiB or more is its own mmap, returned to the OS when freed — resident
    memory then follows the live tensors. The inputs are created first; then the kernel's
    high-water mark is reset (``echo 5 > /proc/self/clear_refs``), the loss and its backward run,
    and ``VmHWM − VmRSS(before)`` is the peak of everything allocated meanwhile (the N×N relation
    matrices, autograd's saved tensors, gradients).
    """
    torch.set_num_threads(THREADS)
    dt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    g = torch.Generator().manual_seed(0)
    b, c, h, w = MAD_SHAPE
    fs = torch.randn(MAD_SHAPE, generator=g, dtype=dt).requires_grad_(True)
    ft = torch.randn(MAD_SHAPE, generator=g, dtype=dt)
    logits = torch.randn((b, MAD_CLASSES, h, w), generator=g, dtype=dt)
    gc.collect()
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    start = time.perf_counter()
    # the dense reference writes out the summed form (DESIGN §4.1 step 5): compare like with like
    blocked = variant == "blocked"
    loss = mad_loss(fs, ft, logits, per_pixel=True, reduction="sum") if blocked else _dense_mad(fs, ft, logits)
    loss.backward()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM") - before
    torch.save({"loss": loss.detach(), "grad": fs.grad, "peak_kib": peak, "seconds": seconds}, out)


def _run_mad_child(variant: str, dtype: str, tmp: Path) -> dict:
    out = tmp / f"mad_{variant}_{dtype}.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--mad-child", variant, str(out), dtype], env=env, check=True
    )
    return torch.load(out)


def b_mad_memory(q: bool) -> None:
    if not Path("/proc/self/clear_refs").exists():
        print("# mad_memory skipped: needs Linux /proc/self/clear_refs to reset the peak resident size", flush=True)
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        blocked, dense = _run_mad_child("blocked", "float32", tmp), _run_mad_child("dense", "float32", tmp)
        check = ""
        if not q:  # the same pair in float64: the formula's agreement without float32 summation noise
            b64, d64 = _run_mad_child("blocked", "float64", tmp), _run_mad_child("dense", "float64", tmp)
            loss64, grad64 = _rel(b64["loss"], d64["loss"]), _rel(b64["grad"], d64["grad"])
            check = f" float64:loss_rel_diff={loss64:.1e},grad_rel_diff={grad64:.1e}"
    n = MAD_SHAPE[0] * MAD_SHAPE[2] * MAD_SHAPE[3]
    nn_mib = n * n * 4 / 2**20
    loss_rel, grad_rel = _rel(blocked["loss"], dense["loss"]), _rel(blocked["grad"], dense["grad"])
    ok = "ok" if max(loss_rel, grad_rel) <= 1e-5 else "ABOVE_1e-5"
    bench(
        "mad_memory",
        blocked["peak_kib"] / dense["peak_kib"],
        0.25,
        f"N={n} C={MAD_SHAPE[1]} fp32 blocked_peak={blocked['peak_kib'] / 1024:.0f}MiB "
        f"dense_peak={dense['peak_kib'] / 1024:.0f}MiB (one NxN fp32 matrix={nn_mib:.0f}MiB) "
        f"method=subprocess_VmHWM_after_clear_refs,MALLOC_MMAP_THRESHOLD_=64KiB "
        f"loss_rel_diff={loss_rel:.1e} grad_rel_diff={grad_rel:.1e}({ok},tolerance=1e-5){check} "
        f"blocked={blocked['seconds']:.1f}s dense={dense['seconds']:.1f}s",
    )


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm((a - b).double()) / torch.linalg.vector_norm(b.double()))


def b_naive_sf(q: bool) -> None:
    n, batch = (32, 16) if q else (64, 16)
    net = sf_network().eval()
    loader = sf_loader(n, batch)
    combos = all_combinations(SF_SPEC)
    one_each = [sf_evaluator([c]) for c in combos]
    shared = sf_evaluator(combos)
    pair = time_pair(
        lambda: [ev.evaluate(net, loader) for ev in one_each],
        lambda: shared.evaluate(net, loader),
        2 if q else 3,
        warmup=0 if q else 1,
    )
    bench(
        "naive_vs_shared",
        pair.ratio,
        1.0,
        f"info_only(ratio>1:shared_is_faster) net=sf_resnet+resnet_trunk width={SF_WIDTH} data=synthetic "
        f"N={n} batch={batch} combinations={len(combos)} {pair.describe('naive', 'shared')}",
        info=True,
    )


def b_naive_mfeat(q: bool) -> None:
    bundle, info = mfeat()
    cfg = config_of("configs/mfeat/sf_md.yaml")
    net = mfeat_net(cfg, info)
    loader = make_loader(bundle.test, cfg, train=False)
    combos = all_combinations(info.spec)
    one_each = [info.evaluator([c]) for c in combos]
    shared = info.evaluator(combos)
    pair = time_pair(
        lambda: [ev.evaluate(net, loader) for ev in one_each], lambda: shared.evaluate(net, loader), 3 if q else 7
    )
    bench(
        "naive_vs_shared_mfeat",
        pair.ratio,
        1.0,
        f"info_only(ratio>1:shared_is_faster) data=mfeat_test N={len(bundle.test)} batch={cfg.data.batch_size} "
        f"combinations={len(combos)} {pair.describe('naive', 'shared')}",
        info=True,
    )


BENCHMARKS: dict[str, Callable[[bool], None]] = {
    "eval_all_combinations": b_eval_sf,
    "eval_all_combinations_mfeat": b_eval_mfeat,
    "mar_mining": b_mining_mfeat,
    "mar_mining_sf": b_mining_sf,
    "train_step_overhead": b_train_step,
    "mad_memory": b_mad_memory,
    "naive_vs_shared": b_naive_sf,
    "naive_vs_shared_mfeat": b_naive_mfeat,
}


# ----------------------------------------------------------------------------------------------- profiling


def profile_epoch(which: str, out_dir: Path) -> None:
    """One MMANet training epoch (ω = 1: the epoch ends with a MAR mining pass, then validation) under
    pyinstrument (Python call tree, if installed) and torch.profiler (operator table)."""
    from mmanet.training.factory import quiet_lightning
    from mmanet.training.fit import fit_stage

    quiet_lightning()
    if which == "mfeat":
        bundle, info = mfeat()
        cfg = config_of(
            "configs/mfeat/mmanet.yaml", train__max_epochs=1, train__progress_bar=False, mar__warmup_epochs=1
        )
    else:  # the SF image network on synthetic 112×112 images
        n = 64
        train, val = sf_images(n, seed=0), sf_images(n // 2, seed=1)
        bundle = DataBundle("synthetic_faces", SF_SPEC, "classification", 2, train, val, val, ["0", "1"], 1)
        info = task_info(bundle)
        cfg = config_of(
            "configs/casia_surf/mmanet.yaml",
            data__batch_size=16,
            data__num_workers=0,
            train__max_epochs=1,
            train__progress_bar=False,
            mar__warmup_epochs=1,
        )
    torch.manual_seed(0)
    teacher = FrozenTeacher(build_net(cfg, info))
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        from pyinstrument import Profiler
    except ImportError:  # pragma: no cover - optional
        Profiler = None
    with tempfile.TemporaryDirectory() as d:
        fit_stage(cfg, bundle, Path(d) / "warm", teacher=teacher)  # warm-up (imports, first-call costs)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            fit_stage(cfg, bundle, Path(d) / "torch_profiler", teacher=teacher)
            t_torch = time.perf_counter() - start
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        (out_dir / f"{which}_ops.txt").write_text(table)
        print(f"# {which}: one epoch under torch.profiler {t_torch:.1f}s; operator table in {out_dir}/{which}_ops.txt")
        if Profiler is not None:
            profiler = Profiler(interval=0.001)
            start = time.perf_counter()
            with profiler:
                fit_stage(cfg, bundle, Path(d) / "pyinstrument", teacher=teacher)
            t_py = time.perf_counter() - start
            text = profiler.output_text(unicode=False, color=False, show_all=False)
            (out_dir / f"{which}_calls.txt").write_text(text)
            print(f"# {which}: one epoch under pyinstrument {t_py:.1f}s; call tree in {out_dir}/{which}_calls.txt")
            print(phase_table(profiler.last_session.root_frame()))
    print(table)


#: (phase, function name, path fragment, level). Level-0 phases are exclusive: a level-0 phase nested in
#: another (Lightning runs training_step and backward inside optimizer.step's closure) is taken out of
#: the outer one. Level-1 phases are parts of the level-0 phase above them.
PHASES = [
    ("training_step (forward + losses)", "training_step", "mmanet/training/module.py", 0),
    ("  teacher forward (inference mode)", "forward_all", "mmanet/training/teacher.py", 1),
    ("  MAD loss", "mad_loss", "mmanet/losses/mad.py", 1),
    ("  MAR loss", "mar_loss", "mmanet/losses/mar.py", 1),
    ("  self.log (Lightning)", "log", "lightning/pytorch/core/module.py", 1),
    ("backward", "backward", "torch/_tensor.py", 0),
    ("optimizer update (step minus closure)", "step", "torch/optim/", 0),
    ("optimizer zero_grad", "zero_grad", "torch/optim/", 0),
    ("data loading (next batch)", "__next__", "torch/utils/data/dataloader.py", 0),
    ("validation (all combinations)", "validation_step", "mmanet/training/module.py", 0),
    ("MAR mining pass", "mine_discrepancies", "mmanet/training/mining.py", 0),
    ("checkpoint save", "save_checkpoint", "lightning/pytorch/strategies/strategy.py", 0),
    ("checkpoint load (best, after fit)", "load_checkpoint", "mmanet/deploy/checkpoint.py", 0),
]


def phase_table(root) -> str:
    """Seconds per phase of a pyinstrument call tree (see :data:`PHASES`)."""
    totals = {name: 0.0 for name, *_ in PHASES}

    def matches(frame, function: str, fragment: str) -> bool:
        return frame.function == function and fragment in (frame.file_path or "")

    def visit(frame, outer: str | None, open_parts: frozenset) -> None:
        here_outer, here_parts = outer, set()
        for name, function, fragment, level in PHASES:
            if not matches(frame, function, fragment):
                continue
            if level == 0 and name != outer:
                totals[name] += frame.time
                if outer is not None:
                    totals[outer] -= frame.time
                here_outer = name
            elif level == 1 and name not in open_parts:
                totals[name] += frame.time
                here_parts.add(name)
        for child in frame.children:
            visit(child, here_outer, open_parts | here_parts)

    visit(root, None, frozenset())
    total = root.time
    other = total - sum(totals[name] for name, *_, level in PHASES if level == 0)
    lines = [f"# {'phase':42}seconds  % of fit  (pyinstrument, 1 ms sampling; fit_stage total {total:.2f}s)"]
    for name, *_ in PHASES:
        lines.append(f"# {name:42}{totals[name]:7.3f}  {100 * totals[name] / total:7.1f}")
    lines.append(f"# {'other (Lightning loop, callbacks, set-up)':42}{other:7.3f}  {100 * other / total:7.1f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller data and fewer repeats (< 3 min on 2 cores)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {list(BENCHMARKS)}")
    parser.add_argument("--profile", choices=["mfeat", "image"], help="profile one MMANet epoch instead")
    parser.add_argument("--profile-out", default="runs/profile", help="where --profile writes its reports")
    parser.add_argument("--mad-child", nargs=3, metavar=("VARIANT", "OUT", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mad_child:
        mad_child(*args.mad_child)
        return
    print(
        f"# torch {torch.__version__}; threads FIXED: torch.set_num_threads({THREADS}) -> "
        f"get_num_threads()={torch.get_num_threads()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; "
        f"{'profile' if args.profile else 'quick' if args.quick else 'full'} run; "
        "ratio = median of interleaved per-repeat ratios",
        flush=True,
    )
    if args.profile:
        profile_epoch(args.profile, Path(args.profile_out))
        return
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; valid: {list(BENCHMARKS)}")
    start = time.perf_counter()
    for name in names:
        BENCHMARKS[name](args.quick)
    print(f"# total {time.perf_counter() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
