"""The ``mmanet`` command: train, evaluate, benchmark, tune, export, predict, datasets.

Every error mmanet raises for the user's input (:class:`~mmanet.errors.MMANetError`) is printed
without a traceback and exits with code 2, and so is a problem of the machine rather than of
mmanet (a full disk, a read-only or vanished file: :data:`ENVIRONMENT_ERRNOS`; out of memory).
Ctrl-C exits with 130 after saying where the run's last checkpoint is and that the same command
resumes it. Anything else is a bug: its traceback is shown, followed by one line asking for a
report, and the exit code is 1 (``MMANET_DEBUG=1`` re-raises every error as it is).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import traceback
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
USER_ERRORS: tuple[type[BaseException], ...] = (MMANetError,)
#: the exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it)
INTERRUPTED = 130
#: the exit code of a bug in mmanet (its traceback is shown)
BUG = 1
#: ``OSError``s that are the machine's state, not mmanet's logic: reported by file name, without a traceback
_ENVIRONMENT = (
    "ENOSPC EDQUOT EROFS EACCES EPERM EIO ENOENT ENOTDIR EISDIR ENAMETOOLONG EMFILE ENFILE ESTALE ETXTBSY ELOOP"
)
ENVIRONMENT_ERRNOS = frozenset(getattr(errno, name) for name in _ENVIRONMENT.split() if hasattr(errno, name))


def _version(value: bool) -> None:
    if value:
        from mmanet import __version__
        from mmanet.versioning import SCHEMA_VERSION

        console.print(f"mmanet {__version__} (file schema {SCHEMA_VERSION})", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="print the version and exit",
        metavar="",  # a flag: no value (typer would show <bool>)
    ),
) -> None:
    """Incomplete multimodal learning: one model for every modality combination (MMANet)."""


def _fail(err: BaseException) -> None:
    if os.environ.get("MMANET_DEBUG"):
        raise err
    err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
    raise typer.Exit(code=2)


def environment_problem(err: BaseException, where: Path | None = None) -> str | None:
    """The one-line message for an error of the machine (disk full, read-only, out of memory); None for others.
    ``where``: the command's output, named when the error does not say which file it was."""
    if isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS:
        reason = err.strerror or str(err)
        if err.filename is not None:
            return f"cannot read or write {err.filename}: {reason}"
        place = f" in {where}" if where is not None else ""
        return f"a file could not be read or written{place}: {reason}"
    if isinstance(err, MemoryError):
        return "out of memory: lower data.batch_size (or data.num_workers), or free memory and run again"
    torch = sys.modules.get("torch")  # (only imported when a command needed it)
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return "out of GPU memory: lower data.batch_size (or use train.precision: 16-mixed), then run again"
    return None


def _bug(err: BaseException) -> None:
    """An error mmanet did not expect: its traceback, then one line asking for a report (exit code 1)."""
    if os.environ.get("MMANET_DEBUG"):
        raise err
    traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    err_console.print(
        "[bold red]this is a bug in mmanet[/], not a problem with your input: please report it with the command "
        "you ran and the traceback above",
        highlight=False,
    )
    raise typer.Exit(code=BUG)


def _interrupted(err: KeyboardInterrupt, resume: str | None) -> None:
    from mmanet.training.guards import TrainingInterrupted, describe_checkpoint

    message = "interrupted (Ctrl-C)"
    if isinstance(err, TrainingInterrupted):
        message += f": training stopped. Last checkpoint: {describe_checkpoint(err.checkpoint)}"
    if resume:
        message += f". {resume}"
    err_console.print(f"\n[bold yellow]{escape(message)}[/]", highlight=False)  # (below a progress bar's line)
    raise typer.Exit(code=INTERRUPTED)


@contextmanager
def _handled(resume: str | None = None, where: Path | None = None) -> Iterator[None]:
    """User errors and the machine's → message + exit 2; Ctrl-C → where to resume + exit 130; bugs →
    traceback + a request for a report, exit 1. ``where``: the command's output (named in messages about
    a file operation that does not say which file failed)."""
    try:
        yield
    except KeyboardInterrupt as err:
        _interrupted(err, resume)
    except USER_ERRORS as err:
        _fail(err)
    except typer.Exit:
        raise
    except Exception as err:
        if os.environ.get("MMANET_DEBUG"):
            raise
        problem = environment_problem(err, where)
        if problem is None:
            _bug(err)
        _fail(MMANetError(problem))


#: the --import option of every command
IMPORT_HELP = "a module or .py file that registers your own components (repeatable; recorded in the run)"


def _load_imports(entries: list[str]) -> None:
    """evaluate, export, predict: the user's modules before the checkpoint is read (those the run recorded are
    imported from its configuration as well)."""
    from mmanet.plugins import load_plugins

    load_plugins(entries)


#: the --num-threads option of every command (train, benchmark and tune: it sets train.num_threads)
THREADS_HELP = "torch intra-op threads (default: 1, the fastest for these networks on a CPU; train.num_threads)"


def _threads_override(num_threads: int | None) -> list[str]:
    """``--num-threads N`` as the config override of the training commands."""
    if num_threads is None:
        return []
    if num_threads < 1:
        raise MMANetError(f"--num-threads must be at least 1, got {num_threads}")
    return [f"train.num_threads={num_threads}"]


def _use_threads(num_threads: int | None) -> None:
    """evaluate, export and predict: ``--num-threads`` or 1 (torch's default uses every core, which on a shared
    CPU is many times slower for these networks)."""
    import torch

    if num_threads is not None and num_threads < 1:
        raise MMANetError(f"--num-threads must be at least 1, got {num_threads}")
    torch.set_num_threads(num_threads or 1)


def _status(message: str) -> None:
    """A status line on stderr (stdout stays the command's output: predict's JSON lines can be piped)."""
    err_console.print(f"[dim]{escape(message)}[/]", highlight=False)


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
        metavar="",  # a flag: no value (typer would show <bool>)
    ),
    num_threads: int | None = typer.Option(None, "--num-threads", help=THREADS_HELP),
    import_: list[str] = typer.Option([], "--import", help=IMPORT_HELP),
) -> None:
    """Train (resuming from the run directory's last checkpoint) and write per-combination tables."""
    from mmanet.config import load_run_config
    from mmanet.training import run
    from mmanet.training.run_dir import check_config_file, check_deletable

    with _handled():
        cfg = load_run_config(config, [*set_, *_threads_override(num_threads)], imports=import_)
        out_dir = out or Path("runs") / cfg.name
        if overwrite:  # --overwrite never deletes what this command reads (the run checks its config's paths)
            check_deletable(out_dir, cfg, [("the config file", config)])
        check_config_file(out_dir, cfg, config)
    resume = f"The run directory {out_dir} keeps every finished epoch: run the same command again to resume it"
    with _handled(resume, where=out_dir):
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
    availability: str | None = typer.Option(
        None,
        "--availability",
        help="deployment availability per modality, e.g. rgb=0.9,depth=0.7: the expected metric, Shapley values and "
        "sweep in deployment.json / .md",
    ),
    num_threads: int | None = typer.Option(None, "--num-threads", help=THREADS_HELP),
    import_: list[str] = typer.Option([], "--import", help=IMPORT_HELP),
) -> None:
    """Evaluate a trained model on every modality combination (inputs standardised with its stored statistics)."""
    from mmanet.analysis.availability import parse_availability
    from mmanet.deploy import resolve_checkpoint
    from mmanet.outputs import writable_directory
    from mmanet.training import evaluate_checkpoint
    from mmanet.training.evaluation import check_evaluation_outputs
    from mmanet.training.run_dir import check_evaluation_dir

    if split not in ("val", "test"):
        _fail(MMANetError(f"--split {split!r} is not a split; valid: ['test', 'val']"))
    with _handled("Nothing was written; run the command again"):
        _use_threads(num_threads)
        _load_imports(import_)
        is_sf_run = checkpoint.is_dir() and (checkpoint / "sf").is_dir()
        model = checkpoint if is_sf_run else resolve_checkpoint(checkpoint)
        out_dir = writable_directory(out or _default_eval_dir(model, split), "--out", create=False)
        check_evaluation_dir(out_dir)
        check_evaluation_outputs(out_dir)  # nothing there is replaced that an evaluation did not write
        wanted = parse_availability(availability) if availability is not None else None
        _status(f"evaluating {model} on every combination of the {split} split …")
        table = evaluate_checkpoint(model, split, out_dir, data_root, availability=wanted)
    _print_table(table, f"{checkpoint} — {split} split, {table.metric} (%)")
    console.print(f"written to {out_dir}/per_combination.csv and .md")
    if wanted is not None:
        result = json.loads((out_dir / "deployment.json").read_text())
        expected = result["methods"]["model"]["expected"]["mean"]
        console.print(f"expected {table.metric} under the availability: {expected:.2f} — {out_dir / 'deployment.md'}")


@app.command()
def benchmark(
    config: Path = typer.Argument(..., help="YAML benchmark configuration"),
    seeds: int | None = typer.Option(None, "--seeds", help="number of seeds (default: from the config)"),
    out: Path | None = typer.Option(None, "--out", help="output directory (default runs/<name>)"),
    set_: list[str] = typer.Option([], "--set", help="override a key of the shared base config (repeatable)"),
    only: list[str] = typer.Option([], "--only", help="run only these method labels (repeatable)"),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="train again the runs whose configuration changed (the others are reused)",
        metavar="",  # a flag: no value (typer would show <bool>)
    ),
    availability: str | None = typer.Option(
        None,
        "--availability",
        help="deployment availability per modality, e.g. rgb=0.9,depth=0.7 (overrides the config's availability:): "
        "the expected metric of each method and which to deploy, in deployment.md",
    ),
    workers: int = typer.Option(
        1, "--workers", help="runs at once, each in its own process (one thread each by default); 1: one after another"
    ),
    executor: str = typer.Option("local", "--executor", help="local (processes on this machine) or ray"),
    address: str | None = typer.Option(None, "--address", help="(ray) the cluster to use, e.g. ray://head:10001"),
    gpus_per_run: float = typer.Option(0.0, "--gpus-per-run", help="(ray) GPUs each run needs"),
    num_threads: int | None = typer.Option(None, "--num-threads", help=THREADS_HELP),
    import_: list[str] = typer.Option([], "--import", help=IMPORT_HELP),
) -> None:
    """Train several methods over several seeds; write report.md, table.csv, ablation.csv and plots.

    A rerun reuses every finished run whose configuration is unchanged; a changed one is refused
    unless --overwrite."""
    from mmanet.analysis.availability import parse_availability
    from mmanet.benchmark import run_benchmark
    from mmanet.benchmark_config import load_benchmark_config

    with _handled():
        bench = load_benchmark_config(config, [*set_, *_threads_override(num_threads)], imports=import_)
        wanted = parse_availability(availability) if availability is not None else None
        if seeds is not None:
            if seeds < 1:
                raise MMANetError(f"--seeds must be at least 1, got {seeds}")
            bench = bench.model_copy(update={"seeds": seeds})
        out_dir = out or Path("runs") / bench.name
    resume = "Run the same command again: finished runs are reused and the interrupted one resumes"
    with _handled(resume, where=out_dir):
        reads = [("the benchmark file", config)]
        report = run_benchmark(
            bench,
            out_dir,
            only=only or None,
            console=console,
            overwrite=overwrite,
            reads=reads,
            availability=wanted,
            workers=workers,
            executor=executor,
            address=address,
            gpus_per_run=gpus_per_run,
        )
    console.print(f"\n[bold]Per combination[/] ({bench.seeds} seed(s), mean ± std) — {out_dir / 'table.csv'}")
    console.print(report.table_markdown(), highlight=False, soft_wrap=True)
    console.print("\n[bold]Summary[/]")
    console.print(report.summary_markdown(), highlight=False, soft_wrap=True)
    if report.deployment is not None and "recommendation" in report.deployment:
        from mmanet.analysis.deployment import recommendation_sentence

        console.print("\n[bold]Which model to deploy[/]")
        console.print(recommendation_sentence(report.deployment).replace("**", ""), highlight=False, soft_wrap=True)
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
    storage: str | None = typer.Option(
        None,
        "--storage",
        help="the Optuna storage: sqlite:///PATH, journal:PATH or a database URL (default OUT/study.db)",
    ),
    workers: int = typer.Option(1, "--workers", help="worker processes on the one study (more: another mmanet tune)"),
    num_threads: int | None = typer.Option(None, "--num-threads", help=THREADS_HELP),
    import_: list[str] = typer.Option([], "--import", help=IMPORT_HELP),
) -> None:
    """Choose hyper-parameters on the VALIDATION split with Optuna (TPE); resumes when run again.

    Writes OUT/best.yaml (a full config for `mmanet train` or a benchmark entry's `config:`),
    OUT/trials.csv and the optimisation-history and parameter-importance plots.
    """
    from mmanet.config import load_raw_run_config
    from mmanet.tuning import METRICS, TuneSettings
    from mmanet.tuning import tune as run_tune

    with _handled():
        raw = load_raw_run_config(config, [*set_, *_threads_override(num_threads)], imports=import_)
        if metric not in METRICS:
            raise MMANetError(f"unknown --metric {metric!r}; valid: {list(METRICS)}")
        if workers < 1:
            raise MMANetError(f"--workers must be at least 1, got {workers}")
        settings = TuneSettings(
            trials,
            metric,  # type: ignore[arg-type]
            seeds,
            seed_base,
            sampler_seed,
            tuple(param),
            storage,
            workers,
        )
    with _handled("Run the same command again: finished trials are kept and the interrupted one resumes", where=out):
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
    num_threads: int | None = typer.Option(None, "--num-threads", help=THREADS_HELP),
    import_: list[str] = typer.Option([], "--import", help=IMPORT_HELP),
) -> None:
    """Export the model: .onnx (raw inputs, normalisation in the graph), .safetensors and model_card.json."""
    from mmanet.deploy.export import export_model

    with _handled("Run the command again"):
        _use_threads(num_threads)
        _load_imports(import_)
        _status(f"exporting {checkpoint}: ONNX graph, weights, model card, then onnxruntime against PyTorch …")
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
    num_threads: int | None = typer.Option(None, "--num-threads", help=THREADS_HELP),
    import_: list[str] = typer.Option([], "--import", help=IMPORT_HELP),
) -> None:
    """Predict with any subset of modalities: one JSON line per sample (present modalities, probabilities, class)."""
    from mmanet.deploy.predict import check_output
    from mmanet.deploy.predict import predict as run_predict
    from mmanet.outputs import writable_file

    with _handled():
        _use_threads(num_threads)
        _load_imports(import_)
        target = writable_file(out, "--out", "predictions.jsonl") if out is not None else None
        if target is not None:  # never the model, an --input file, or a file predict did not write
            check_output(target, model, input_)
        _status(f"predicting with {model} …")
        if target is not None:
            try:  # (segmentation label maps go beside it)
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise MMANetError(f"cannot create the directory of --out {target}: {err.strerror}") from None
        records = run_predict(model, input_, label_map_dir=target.parent if target is not None else None)
        lines = [json.dumps(r) for r in records]
        if target is None:
            _print_lines(lines)
            return
        try:
            target.write_text("".join(f"{line}\n" for line in lines))
        except OSError as err:
            raise MMANetError(f"cannot write {target}: {err.strerror}") from None
    console.print(f"{len(records)} prediction(s) written to {target}")


#: the exit code of a command whose reader closed the pipe (``mmanet predict … | head``), as shells report it
BROKEN_PIPE = 141


def _print_lines(lines: list[str]) -> None:
    """Print to stdout; a reader that stops early (``| head``) ends the command quietly, as for any Unix tool."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # (Python would report the failed flush at exit)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(code=BROKEN_PIPE) from None


@app.command("list")
def list_components(
    kind: str | None = typer.Argument(None, help="methods, encoders, fusions, heads or datasets (default: all)"),
    import_: list[str] = typer.Option([], "--import", help=IMPORT_HELP),
) -> None:
    """List the registered methods, encoders, fusions, heads and datasets, with descriptions and options."""
    from mmanet.catalog import KINDS, catalog

    with _handled():
        _load_imports(import_)
        if kind is not None and kind not in KINDS:
            raise MMANetError(f"unknown kind {kind!r}; valid: {list(KINDS)}")
        for name in [kind] if kind is not None else list(KINDS):
            table = Table(title=name, show_lines=False)
            for column in ("name", "description", "options"):
                table.add_column(column, overflow="fold")
            for entry in catalog(name):
                table.add_row(entry.name, entry.description, ", ".join(entry.options))
            console.print(table)


@app.command()
def datasets() -> None:
    """List the datasets, their modalities, and whether their data is on this machine."""
    table = Table(title="mmanet datasets")
    for col in ("name", "modalities", "task", "available", "where / how to get it"):
        table.add_column(col)
    with _handled():
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
