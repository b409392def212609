"""The ``mmanet`` command: train, evaluate, benchmark, tune, export, predict, datasets.

Every error mmanet raises for the user's input (:class:`~mmanet.errors.MMANetError`) is printed
without a traceback and exits with code 2; Ctrl-C exits with 130 after saying where the run's
last checkpoint is and that the same command resumes it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mmanet.data import DATASETS
from mmanet.errors import MMANetError

app = typer.Typer(
    help="Incomplete multimodal learning: one model for every modality combination (MMANet).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)

#: errors that are the user's input, printed without a traceback (exit code 2)
USER_ERRORS: tuple[type[BaseException], ...] = (MMANetError, ValueError, FileNotFoundError)
#: the exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it)
INTERRUPTED = 130


def _fail(err: BaseException) -> None:
    if os.environ.get("MMANET_DEBUG"):
        raise err
    err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
    raise typer.Exit(code=2)


def _interrupted(err: KeyboardInterrupt, resume: str | None) -> None:
    from mmanet.training.guards import TrainingInterrupted, describe_checkpoint

    message = "interrupted (Ctrl-C)"
    if isinstance(err, TrainingInterrupted):
        message += f": training stopped. Last checkpoint: {describe_checkpoint(err.checkpoint)}"
    if resume:
        message += f". {resume}"
    err_console.print(f"[bold yellow]{escape(message)}[/]", highlight=False)
    raise typer.Exit(code=INTERRUPTED)


@contextmanager
def _handled(resume: str | None = None) -> Iterator[None]:
    """User errors → message + exit 2; Ctrl-C → where to resume + exit 130."""
    try:
        yield
    except KeyboardInterrupt as err:
        _interrupted(err, resume)
    except USER_ERRORS as err:
        _fail(err)


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
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="delete an existing run directory first (never one holding a file this command reads)",
    ),
) -> None:
    """Train (resuming from the run directory's last checkpoint) and write per-combination tables."""
    from mmanet.config import load_run_config
    from mmanet.training import run
    from mmanet.training.run_dir import check_config_file, check_deletable

    with _handled():
        cfg = load_run_config(config, set_)
        out_dir = out or Path("runs") / cfg.name
        if overwrite:  # --overwrite never deletes what this command reads (the run checks its config's paths)
            check_deletable(out_dir, cfg, [("the config file", config)])
        check_config_file(out_dir, cfg, config)
    with _handled(f"The run directory {out_dir} keeps every finished epoch: run the same command again to resume it"):
        result = run(cfg, out_dir, overwrite=overwrite)
    split = cfg.evaluate.split
    _print_table(result.table, f"{cfg.name} ({cfg.method}) — {split} split, {result.table.metric} (%)")
    console.print(f"run directory: {out_dir}  ({result.train_seconds:.1f} s, {result.num_parameters:,} parameters)")


@app.command()
def evaluate(
    checkpoint: Path = typer.Argument(..., help="a .ckpt file or a run directory"),
    split: str = typer.Option("test", "--split", help="val or test"),
    out: Path | None = typer.Option(
        None, "--out", help="where to write per_combination.{csv,md} (not a run directory)"
    ),
    data_root: str | None = typer.Option(None, "--data-root", help="override the data root stored in the checkpoint"),
) -> None:
    """Evaluate a trained model on every modality combination (inputs standardised with its stored statistics)."""
    from mmanet.deploy import resolve_checkpoint
    from mmanet.outputs import writable_directory
    from mmanet.training import evaluate_checkpoint
    from mmanet.training.run_dir import check_evaluation_dir

    if split not in ("val", "test"):
        _fail(ValueError(f"unknown split {split!r}; valid: ['test', 'val']"))
    with _handled("Nothing was written; run the command again"):
        is_sf_run = checkpoint.is_dir() and (checkpoint / "sf").is_dir()
        model = checkpoint if is_sf_run else resolve_checkpoint(checkpoint)
        out_dir = writable_directory(out or _default_eval_dir(model, split), "--out", create=False)
        check_evaluation_dir(out_dir)
        table = evaluate_checkpoint(model, split, out_dir, data_root)
    _print_table(table, f"{checkpoint} — {split} split, {table.metric} (%)")
    console.print(f"written to {out_dir}/per_combination.csv and .md")


@app.command()
def benchmark(
    config: Path = typer.Argument(..., help="YAML benchmark configuration"),
    seeds: int | None = typer.Option(None, "--seeds", help="number of seeds (default: from the config)"),
    out: Path | None = typer.Option(None, "--out", help="output directory (default runs/<name>)"),
    set_: list[str] = typer.Option([], "--set", help="override a key of the shared base config (repeatable)"),
    only: list[str] = typer.Option([], "--only", help="run only these method labels (repeatable)"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="train again the runs whose configuration changed (the others are reused)"
    ),
) -> None:
    """Train several methods over several seeds; write report.md, table.csv, ablation.csv and plots.

    A rerun reuses every finished run whose configuration is unchanged; a changed one is refused
    unless --overwrite."""
    from mmanet.benchmark import run_benchmark
    from mmanet.config import load_benchmark_config

    with _handled():
        bench = load_benchmark_config(config, set_)
        if seeds is not None:
            if seeds < 1:
                raise ValueError("--seeds must be at least 1")
            bench = bench.model_copy(update={"seeds": seeds})
        out_dir = out or Path("runs") / bench.name
    resume = "Run the same command again: finished runs are reused and the interrupted one resumes"
    with _handled(resume):
        reads = [("the benchmark file", config)]
        report = run_benchmark(bench, out_dir, only=only or None, console=console, overwrite=overwrite, reads=reads)
    console.print(f"\n[bold]Per combination[/] ({bench.seeds} seed(s), mean ± std) — {out_dir / 'table.csv'}")
    console.print(report.table_markdown(), highlight=False, soft_wrap=True)
    console.print("\n[bold]Summary[/]")
    console.print(report.summary_markdown(), highlight=False, soft_wrap=True)
    console.print(f"report: {out_dir / 'report.md'}")


@app.command()
def tune(
    config: Path = typer.Argument(..., help="YAML run configuration to tune (e.g. configs/mfeat/mmanet.yaml)"),
    trials: int = typer.Option(..., "--trials", help="number of finished trials the study should hold"),
    out: Path = typer.Option(..., "--out", help="study directory (study.db, best.yaml, trials.csv, plots, runs)"),
    metric: str = typer.Option("avg", "--metric", help="avg | worst5 | weak, on the validation split"),
    set_: list[str] = typer.Option([], "--set", help="override a key of the configuration (repeatable)"),
    param: list[str] = typer.Option([], "--param", help="search only this key, e.g. mad.alpha (repeatable)"),
    seeds: int = typer.Option(1, "--seeds", help="training seeds per trial (the score is their mean)"),
    seed_base: int = typer.Option(100, "--seed-base", help="first tuning seed (benchmarks report seeds 0, 1, …)"),
    sampler_seed: int = typer.Option(0, "--sampler-seed", help="seed of the TPE sampler"),
) -> None:
    """Choose hyper-parameters on the VALIDATION split with Optuna (TPE); resumes when run again.

    Writes OUT/best.yaml (a full config for `mmanet train` or a benchmark entry's `config:`),
    OUT/trials.csv and the optimisation-history and parameter-importance plots.
    """
    from mmanet.config import load_raw_run_config
    from mmanet.tuning import METRICS, TuneSettings
    from mmanet.tuning import tune as run_tune

    with _handled():
        raw = load_raw_run_config(config, set_)
        if metric not in METRICS:
            raise ValueError(f"unknown --metric {metric!r}; valid: {list(METRICS)}")
        settings = TuneSettings(trials, metric, seeds, seed_base, sampler_seed, tuple(param))  # type: ignore[arg-type]
    with _handled("Run the same command again: finished trials are kept and the interrupted one resumes"):
        run_tune(raw, out, settings, console=console, reads=[("the config file", config)])


def _default_eval_dir(model: Path, split: str) -> Path:
    """``RUN/eval_<split>`` for a run directory or its checkpoint; beside any other checkpoint file."""
    if model.is_dir():
        return model / f"eval_{split}"
    run_dir = model.parent.parent if model.parent.name == "checkpoints" else model.parent
    return run_dir / f"eval_{split}"


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="a deployment .ckpt or a run directory"),
    out: Path | None = typer.Option(None, "--out", help="the .onnx file (default: next to the checkpoint)"),
    opset: int = typer.Option(17, "--opset"),
) -> None:
    """Export the model: .onnx (raw inputs, normalisation in the graph), .safetensors and model_card.json."""
    from mmanet.deploy.export import export_model

    with _handled("Run the command again"):
        result = export_model(checkpoint, out, opset)
    console.print(f"exported {result.onnx} (inputs: {', '.join(result.inputs)} — raw values; output: logits)")
    console.print(f"onnxruntime parity over {result.combinations} combinations: max |Δ logit| = {result.parity:.1e}")
    console.print(f"weights: {result.safetensors}; model card: {result.card}")


@app.command()
def predict(
    model: Path = typer.Argument(..., help="a run directory, a .ckpt, an exported .safetensors or .onnx"),
    input_: list[str] = typer.Option(
        [], "--input", help="an .npz of raw arrays (one per modality, any subset) or modality=IMAGE (repeatable)"
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="write the JSON lines here (and segmentation PNGs beside it); replaces only predict's own files",
    ),
) -> None:
    """Predict with any subset of modalities: one JSON line per sample (present modalities, probabilities, class)."""
    from mmanet.deploy.predict import check_output
    from mmanet.deploy.predict import predict as run_predict
    from mmanet.outputs import writable_file

    with _handled():
        target = writable_file(out, "--out", "predictions.jsonl") if out is not None else None
        if target is not None:  # never the model, an --input file, or a file predict did not write
            check_output(target, model, input_)
        records = run_predict(model, input_, label_map_dir=target.parent if target is not None else None)
        lines = [json.dumps(r) for r in records]
        if target is None:
            for line in lines:
                print(line)
            return
        try:
            target.write_text("".join(f"{line}\n" for line in lines))
        except OSError as err:
            raise MMANetError(f"cannot write {target}: {err.strerror}") from None
    console.print(f"{len(records)} prediction(s) written to {target}")


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
