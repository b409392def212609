"""Cost of evaluating every modality combination, measured in one run (prints ratios).

Compares, on the mfeat test split (or the toy data with --toy), for an SF-MD network:
  single pass         — one forward over the split with the full combination
  encode once (ours)  — PerCombinationEvaluator: each batch encoded once, fused/predicted 63×
  naive               — a full forward (encode + fuse + predict) per combination
Usage (from the repository root): python -m perf.all_combination_eval [--toy] [--repeats 5] [--fusion concat]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from mmanet.config import resolve_run_config
from mmanet.metrics import PerCombinationEvaluator
from mmanet.modality import all_combinations
from mmanet.models.factory import build_net
from mmanet.training.factory import load_bundle, task_info


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--toy", action="store_true", help="use the in-memory toy data instead of mfeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fusion", default="concat")
    args = parser.parse_args()
    data = {"name": "toy"} if args.toy else {"name": "mfeat"}
    cfg = resolve_run_config({"method": "sf_md", "data": {**data, "batch_size": 256}, "model": {"fusion": args.fusion}})
    bundle = load_bundle(cfg)
    info = task_info(bundle)
    net = build_net(cfg, info).eval()
    loader = DataLoader(bundle.test, batch_size=256)
    combos = all_combinations(info.spec)

    @torch.no_grad()
    def single_pass() -> None:
        for inputs, present, _ in loader:
            net(inputs, present)

    evaluator = PerCombinationEvaluator(info.spec, info.num_classes, combos)

    def encode_once() -> None:
        evaluator.evaluate(net, loader)

    @torch.no_grad()
    def naive() -> None:
        for combo in combos:
            mask = combo.mask()
            for inputs, present, _ in loader:
                net(inputs, present & mask)

    torch.set_num_threads(max(1, torch.get_num_threads()))
    t_single = best_of(single_pass, args.repeats)
    t_once = best_of(encode_once, args.repeats)
    t_naive = best_of(naive, args.repeats)
    print(f"data: {bundle.name}, {len(bundle.test)} test samples, {len(combos)} combinations, fusion {args.fusion}")
    print(f"single pass (full combination):     {t_single * 1e3:8.1f} ms")
    print(f"all combinations, encode once:      {t_once * 1e3:8.1f} ms")
    print(f"all combinations, naive re-encode:  {t_naive * 1e3:8.1f} ms")
    print(f"all-combination evaluation / single pass = {t_once / t_single:.1f}x")
    print(f"naive / encode-once                       = {t_naive / t_once:.2f}x")


if __name__ == "__main__":
    main()
