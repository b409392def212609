"""What the measurements run on: the SF image network on synthetic 112×112 images, mfeat with its shipped
configs, and a full-modality inference pass."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

from mmanet.config import RunConfig, resolve_run_config
from mmanet.data import ArrayMultimodalDataset, DataBundle, collate_samples, load_dataset
from mmanet.metrics import PerCombinationEvaluator
from mmanet.modality import ModalitySpec
from mmanet.models.builder import build_network
from mmanet.models.factory import build_net
from mmanet.models.network import MultimodalNet
from mmanet.task import TaskInfo
from mmanet.training.factory import task_info

ROOT = Path(__file__).resolve().parents[1]
SF_SPEC = ModalitySpec(("rgb", "depth", "ir"))
SF_SHAPES = {m: (3, 112, 112) for m in SF_SPEC.names}
SF_WIDTH = 64


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
