"""MAR mining: one mining pass over full + leave-one-out candidates ÷ one full-modality inference pass."""

from __future__ import annotations

from mmanet.methods.mar import mine_discrepancies, mining_loader
from mmanet.modality import leave_one_out_combinations
from perf.fixtures import (
    SF_SPEC,
    SF_WIDTH,
    config_of,
    full_pass,
    mfeat,
    mfeat_net,
    mfeat_one,
    sf_loader,
    sf_network,
    sf_one,
)
from perf.harness import bench, time_pair
from perf.macs import combination_macs, combination_note


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
