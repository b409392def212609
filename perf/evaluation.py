"""All-combination evaluation: every combination ÷ the full one (SF image network, mfeat), and one evaluator
per combination ÷ the shared path (for information)."""

from __future__ import annotations

from mmanet.modality import all_combinations
from mmanet.training.factory import make_loader
from perf.fixtures import (
    SF_SPEC,
    SF_WIDTH,
    config_of,
    mfeat,
    mfeat_net,
    mfeat_one,
    sf_evaluator,
    sf_loader,
    sf_network,
    sf_one,
)
from perf.harness import bench, time_pair
from perf.macs import combination_macs, combination_note


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
