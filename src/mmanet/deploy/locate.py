"""Find the model a path names: a checkpoint file, or a run directory's model — else say what the path is.

A finished run's model is ``checkpoints/best.ckpt`` (``last.ckpt`` when no validation ever
ran, as training itself does). Anything else gets an error that says what the directory is (a
customized SF run, a benchmark, an unfinished run, a ``checkpoints`` folder …) and what to pass
instead.
"""

from __future__ import annotations

from pathlib import Path

from mmanet.deploy.checkpoint import CheckpointError

RUN_HINT = "pass a run directory (the --out of mmanet train) or a .ckpt file"


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file ``path`` names (itself, or a run directory's model); a CheckpointError otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; {RUN_HINT}")
    if not path.is_dir():
        return path
    best, last = path / "checkpoints" / "best.ckpt", path / "checkpoints" / "last.ckpt"
    if best.is_file():
        return best
    if last.is_file() and (path / "results.json").is_file():  # finished without a validation epoch
        return last
    raise CheckpointError(describe_directory(path))


def trained_combinations(run_dir: Path) -> list[str]:
    """The combinations of a customized (SF) run directory whose model has finished training."""
    return sorted(p.name for p in (run_dir / "sf").iterdir() if (p / "checkpoints" / "best.ckpt").is_file())


def describe_directory(path: Path) -> str:
    """Why ``path`` (a directory without a model of its own) cannot be used as one, and what to pass instead."""
    if (path / "sf").is_dir():
        combos = trained_combinations(path)
        if not combos:
            return f"{path} is a customized (SF) run in which no combination has finished training yet"
        return (
            f"{path} is a customized (SF) run: one model per combination, no single model. Pass one of them, e.g. "
            f"{path / 'sf' / combos[-1]} (trained: {', '.join(combos)}); `mmanet evaluate {path}` evaluates them all"
        )
    runs = sorted(  # LABEL/seed_k; not the shared teachers (training.shared_teacher.BENCHMARK_TEACHERS)
        p.parent.relative_to(path)
        for p in path.glob("*/seed_*/config.yaml")
        if p.parent.parent.name != "shared_teachers"
    )
    if runs:
        return (
            f"{path} is a benchmark directory holding {len(runs)} run{'s' if len(runs) > 1 else ''}; pass one of "
            f"them, e.g. {path / runs[0]} "
            f"(runs: {', '.join(str(r) for r in runs[:6])}{' …' if len(runs) > 6 else ''})"
        )
    if path.name == "checkpoints" and any(path.glob("*.ckpt")):
        return f"{path} is a run's checkpoints folder; pass {path.parent} or one of its .ckpt files"
    if (path / "config.yaml").is_file():
        last = path / "checkpoints" / "last.ckpt"
        if last.is_file():
            return (
                f"{path} is a run that has not finished training (no checkpoints/best.ckpt yet). Run the same "
                f"`mmanet train` command again to finish it, or pass {last} to use its latest weights"
            )
        return f"{path} is a run directory without a checkpoint (training never finished an epoch); train it first"
    return f"{path} is not an mmanet run directory (no config.yaml, no checkpoints/best.ckpt); {RUN_HINT}"
