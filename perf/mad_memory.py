"""Peak memory of per-pixel MAD, block-wise ÷ dense, each variant in its own subprocess
(``python -m perf.mad_memory VARIANT OUT DTYPE`` is the child)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mmanet.losses import mad_loss
from perf.fixtures import ROOT
from perf.harness import THREADS, bench

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
    subprocess.run([sys.executable, "-m", "perf.mad_memory", variant, str(out), dtype], env=env, cwd=ROOT, check=True)
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


if __name__ == "__main__":
    mad_child(*sys.argv[1:4])
