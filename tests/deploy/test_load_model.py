"""`mmanet.deploy.load_model` rebuilds a trained network without importing Lightning."""

from __future__ import annotations

import subprocess
import sys

import torch

from mmanet.deploy import load_model
from mmanet.training import run


def test_load_model_without_lightning_matches_the_trained_network(tiny_config, tmp_path):
    result = run(tiny_config("mmanet", train__max_epochs=1, teacher__max_epochs=1), tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    code = (
        "import sys, torch, mmanet.deploy as d\n"
        f"m = d.load_model({str(ckpt)!r})\n"
        "assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules, 'lightning imported'\n"
        "assert not m.standardised_net.training and m.metadata.modalities == ('a', 'b', 'c')\n"
        "assert m.metadata.task == 'classification'\n"
        "assert not any(k.startswith('reg_head') for k in m.standardised_net.state_dict())\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr
    model, metadata = load_model(tmp_path / "run")  # a run directory works too, and unpacks as (model, metadata)
    assert metadata.num_classes == 3 and result.num_parameters == sum(p.numel() for p in model.parameters())
    inputs = {m: torch.randn(4, *metadata.input_shapes[m]) for m in metadata.modalities}
    present = torch.ones(4, 3, dtype=torch.bool)
    assert model(inputs, present).shape == (4, 3)
