"""The ``mmanet`` command: train, evaluate, benchmark, export, datasets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mmanet.config import ConfigError
from mmanet.data import DATASETS, DataError
from mmanet.modality import ModalityError
from mmanet.registry import UnknownKeyError

app = typer.Typer(
    help="Incomplete multimodal learning: one model for every modality combination (MMANet).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)

#: errors that are the user's input, printed without a traceback
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, ModalityError, UnknownKeyError, ValueError)


def _fail(err: BaseException) -> None:
    if os.environ.get("MMANET_DEBUG"):
        raise err
    err_console.print(f"[bold red]error:[/] {err}", highlight=False, markup=True)
    raise typer.Exit(code=2)


def _user_errors():
    from mmanet.deploy.checkpoint import CheckpointError
    from mmanet.training.run_dir import RunDirectoryError
    from mmanet.training.teacher import TeacherChangedError, TeacherMismatchError

    return (
        *USER_ERRORS,
        CheckpointError,
        RunDirectoryError,
        TeacherChangedError,
        TeacherMismatchError,
        FileNotFoundError,
    )


def _print_table(table, title: str) -> None:
    rich_table = Table(title=title, show_lines=False)
    header = table.header()
    for h in header:
        rich_table.add_column(h, justify="right" if h in table.metric_names else "center")
    for record in table.records():
        rich_table.add_row(*record)
    console.print(rich_table)


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML run configuration"),
    set_: list[str] = typer.Option([], "--set", help="override a key: --set train.lr=0.01 (repeatable)"),
    out: Path | None = typer.Option(None, "--out", help="run directory (default runs/<name>)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="delete an existing run directory first"),
) -> None:
    """Train (resuming from the run directory's last checkpoint) and write per-combination tables."""
    from mmanet.config import load_run_config
    from mmanet.training import run

    try:
        cfg = load_run_config(config, set_)
        out_dir = out or Path("runs") / cfg.name
        result = run(cfg, out_dir, overwrite=overwrite)
    except _user_errors() as err:
        _fail(err)
        return
    split = cfg.evaluate.split
    _print_table(result.table, f"{cfg.name} ({cfg.method}) — {split} split, {result.table.metric} (%)")
    console.print(f"run directory: {out_dir}  ({result.train_seconds:.1f} s, {result.num_parameters:,} parameters)")


@app.command()
def evaluate(
    checkpoint: Path = typer.Argument(..., help="a .ckpt file or a run directory"),
    split: str = typer.Option("test", "--split", help="val or test"),
    out: Path | None = typer.Option(None, "--out", help="where to write per_combination.{csv,md}"),
    data_root: str | None = typer.Option(None, "--data-root", help="override the data root stored in the checkpoint"),
) -> None:
    """Evaluate a trained model on every modality combination."""
    from mmanet.training import evaluate_checkpoint

    if split not in ("val", "test"):
        _fail(ValueError(f"unknown split {split!r}; valid: ['test', 'val']"))
    try:
        out_dir = out or (checkpoint if checkpoint.is_dir() else checkpoint.parent.parent) / f"eval_{split}"
        table = evaluate_checkpoint(checkpoint, split, out_dir, data_root)
    except _user_errors() as err:
        _fail(err)
        return
    _print_table(table, f"{checkpoint} — {split} split, {table.metric} (%)")
    console.print(f"written to {out_dir}/per_combination.csv and .md")


@app.command()
def benchmark(
    config: Path = typer.Argument(..., help="YAML benchmark configuration"),
    seeds: int | None = typer.Option(None, "--seeds", help="number of seeds (default: from the config)"),
    out: Path | None = typer.Option(None, "--out", help="output directory (default runs/<name>)"),
    set_: list[str] = typer.Option([], "--set", help="override a key of the shared base config (repeatable)"),
    only: list[str] = typer.Option([], "--only", help="run only these method labels (repeatable)"),
) -> None:
    """Train several methods over several seeds; write report.md, table.csv, ablation.csv and plots."""
    from mmanet.benchmark import run_benchmark
    from mmanet.config import load_benchmark_config

    try:
        bench = load_benchmark_config(config, set_)
        if seeds is not None:
            if seeds < 1:
                raise ValueError("--seeds must be at least 1")
            bench = bench.model_copy(update={"seeds": seeds})
        out_dir = out or Path("runs") / bench.name
        report = run_benchmark(bench, out_dir, only=only or None, console=console)
    except _user_errors() as err:
        _fail(err)
        return
    console.print(f"\n[bold]Per combination[/] ({bench.seeds} seed(s), mean ± std) — {out_dir / 'table.csv'}")
    console.print(report.table_markdown(), highlight=False, soft_wrap=True)
    console.print("\n[bold]Summary[/]")
    console.print(report.summary_markdown(), highlight=False, soft_wrap=True)
    console.print(f"report: {out_dir / 'report.md'}")


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="a deployment .ckpt or a run directory"),
    out: Path | None = typer.Option(None, "--out", help="the .onnx file (default: next to the checkpoint)"),
    opset: int = typer.Option(17, "--opset"),
) -> None:
    """Export the deployment network to ONNX and check it against PyTorch on every combination."""
    from mmanet.deploy import load_model, resolve_checkpoint
    from mmanet.deploy.onnx import check_parity, export_onnx

    try:
        path = resolve_checkpoint(checkpoint)
        net, metadata = load_model(path)
        info = metadata.info
        sequences = tuple(m for m, shape in info.input_shapes.items() if len(shape) == 2)
        target = out or path.with_suffix(".onnx")
        export_onnx(net, info.input_shapes, target, lengths_modalities=sequences, opset=opset)
        worst = check_parity(net, info.input_shapes, target)
    except _user_errors() as err:
        _fail(err)
        return
    inputs = ", ".join([*info.spec.names, *(f"lengths_{m}" for m in sequences), "present"])
    console.print(f"exported {target} (inputs: {inputs}; output: logits)")
    console.print(f"onnxruntime parity over {2 ** len(info.spec) - 1} combinations: max |Δ logit| = {worst:.1e}")


@app.command()
def datasets() -> None:
    """List the datasets, their modalities, and whether their data is on this machine."""
    table = Table(title="mmanet datasets")
    for col in ("name", "modalities", "task", "available", "where / how to get it"):
        table.add_column(col)
    for name in DATASETS:
        entry = DATASETS.get(name)
        ok, where = entry.availability(None)
        modalities = ", ".join(entry.modalities) or "(from the files)"
        table.add_row(name, modalities, entry.task, "yes" if ok else "no", where)
    console.print(table)
    for name in DATASETS:
        console.print(f"[bold]{name}[/]: {DATASETS.get(name).description}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
