"""One MMANet training epoch under pyinstrument (a phase table) and torch.profiler (an operator table)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from mmanet.data import DataBundle
from mmanet.models.factory import build_net
from mmanet.training.factory import task_info
from mmanet.training.teacher import FrozenTeacher
from perf.fixtures import SF_SPEC, config_of, mfeat, sf_images


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
    ("MAR mining pass", "mine_discrepancies", "mmanet/methods/mar.py", 0),
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
