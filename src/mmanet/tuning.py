"""``mmanet tune``: choose hyper-parameters on the VALIDATION split with Optuna (issue 13).

A study searches the knobs the configured method actually has (:func:`search_space`): the learning
rate always; MAD's weight α (batch-size-free scale), variant and distilled feature when MAD is on;
MAR's β and warm-up ω when MAR is on; the distillation temperature T (and weight γ) when KD is on.
Every trial trains with ``evaluate.split: val`` (the test split is never evaluated) on tuning
seeds (default 100, 101, … — the benchmarks report seeds 0, 1, …) and scores the validation table
(:data:`METRICS`: the average over combinations, the mean of the 5 worst, or the mean over the mined
weak set), averaged over the seeds.

The study lives in ``OUT/study.db`` (SQLite): a rerun of the same command continues it — finished
trials are kept, a trial that was interrupted is run again with the same parameters, and since
every trial's run directory is named after its parameters, that run resumes from its last epoch.
Trial 0 of a new study is the configuration as given (where its values lie in the search ranges), so
the study's best is never worse on validation than the defaults it started from. MMANet-family
trials share a teacher per seed whenever the teacher's own configuration is the same
(``OUT/teachers/``); the teacher is identical to the one each trial would train for itself.

A trial whose training diverges (a non-finite loss) is recorded as failed and not retried.

Several workers (``--workers N`` here, or ``mmanet tune`` started again on the same ``--out`` and
``--storage``, on this machine or another one sharing the file system) work on one study: one at a time
checks the study's identity and queues trial 0 (so it runs once), then each draws and runs trials until the
study holds ``--trials`` finished ones (each finishes the trial it was running: at most ``workers − 1``
more). A worker that dies leaves its trial RUNNING: a relational storage's heartbeat (:data:`HEARTBEAT_S`)
fails it and another worker runs it again with the same parameters; a journal storage has no heartbeat,
so such a trial is retried when a worker starts with no other alive. Another study (another configuration,
metric, seeds or search space) on the same ``--out`` is refused. ``--storage``: ``sqlite:///PATH`` or any
database URL Optuna takes, or ``journal:PATH`` (a journal file for a shared file system; default
``OUT/study.db``).
The sampler's draws for a trial depend only on ``--sampler-seed``, the trial's place among the trials
that count (finished or diverged — not an interrupted attempt, which is run again with its own
parameters) and the finished trials before it (:class:`TrialSeededSampler`): a study interrupted and
continued draws the same points, and writes the same ``best.yaml``, as one that ran straight through.
A damaged ``study.db`` is an error that says so.

Outputs: ``best.yaml`` (a complete run configuration with the best parameters, the original seed and
teacher, for ``mmanet train`` or a benchmark entry's ``config:``), ``trials.csv``,
``optimization_history.png`` and ``param_importances.png``. ``--out`` is a new or empty directory or
an earlier study's (it holds ``study.db``); none of the outputs is a file the command reads (the
config file), and nothing is written into a directory that holds other files of those names.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from filelock import FileLock, Timeout

from mmanet.config import ConfigError, RunConfig, deep_merge, method_presets, resolve_run_config, set_dotted
from mmanet.data import DataBundle
from mmanet.errors import MMANetError
from mmanet.methods.mar import weak_set_of
from mmanet.outputs import OutputPathError, Reads, check_not_read, writable_directory, writing
from mmanet.results import ResultTable, higher_is_better

Metric = Literal["avg", "worst5", "weak"]
METRICS: dict[str, str] = {
    "avg": "average over every combination (validation)",
    "worst5": "mean of the 5 worst combinations (validation)",
    "weak": "mean over the mined weak set (validation; methods with mar.mode: mined)",
}
STUDY_NAME = "mmanet"
#: written into a study's directory (its storage): a study kept elsewhere (--storage) is still recognised as one
STUDY_MARK = "study.json"
#: seconds between a running trial's heartbeats (relational storages): three missed and it is failed and retried
HEARTBEAT_S = 20
WORST_K = 5
#: what a study writes in its directory (check_outputs: only into a new or empty directory, or a study's)
STUDY_OUTPUTS = (
    "study.db",
    "study.json",
    "best.yaml",
    "trials.csv",
    "optimization_history.png",
    "param_importances.png",
    "trials",
    "teachers",
    "workers",
)


class TuneError(MMANetError):
    """The tuning request cannot be carried out as given (and why)."""


def counts_for_sampler(trial) -> bool:
    """A trial that takes a place in the study's sequence: finished (complete, pruned) or diverged — not an
    interrupted attempt, whose parameters are queued again (:meth:`Tuner._requeue_interrupted`)."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and bool(trial.user_attrs.get("diverged"))


def trial_place(study, trial) -> int:
    """A trial's place in the study's sequence: how many trials before it count (:func:`counts_for_sampler`).
    What the sampler is seeded with and what messages and ``best.yaml`` call "trial k": unlike Optuna's
    number, it does not move when an interrupted attempt is run again."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number and counts_for_sampler(t))


def _trial_seeded_sampler_class():
    import optuna

    class TrialSeededSampler(optuna.samplers.BaseSampler):
        """TPE reseeded for every trial with ``seed + k``, ``k`` the number of trials before it that count
        (:func:`counts_for_sampler`): a trial's draws depend on the seed, its place and the finished history
        only, never on how many attempts were interrupted (module docstring)."""

        def __init__(self, seed: int) -> None:
            self.seed = seed
            self._tpe = optuna.samplers.TPESampler(seed=seed)

        def before_trial(self, study, trial) -> None:
            self._tpe = optuna.samplers.TPESampler(seed=self.seed + trial_place(study, trial))
            self._tpe.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self._tpe.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._tpe.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._tpe.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self._tpe.after_trial(study, trial, state, values)

    return TrialSeededSampler


def study_storage_errors() -> tuple[type[BaseException], ...]:
    """What Optuna's SQLite storage raises for a damaged or unwritable ``study.db``."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    return (SQLAlchemyError, optuna.exceptions.StorageInternalError)


@dataclass(frozen=True)
class Param:
    """One searched key: ``kind`` is ``log`` (log-uniform float), ``float``, ``int`` or ``choice``."""

    key: str
    kind: Literal["log", "float", "int", "choice"]
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        if self.kind == "log":
            return trial.suggest_float(self.key, self.low, self.high, log=True)
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_categorical(self.key, list(self.choices))

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key} ∈ {list(self.choices)}"
        scale = " (log)" if self.kind == "log" else ""
        return f"{self.key} ∈ [{self.low:g}, {self.high:g}]{scale}"


def search_space(config: RunConfig, feature_names: Sequence[str]) -> list[Param]:
    """The knobs this configuration has (see the module docstring); ranges around the defaults."""
    # SGD's good step sizes reach above 1e-2 (mfeat under the authors' schedule: about 1.6e-2)
    space = [Param("train.lr", "log", 1e-4, 1e-1 if config.train.optimizer == "sgd" else 1e-2)]
    if config.mad_active:
        features = [f for f in feature_names if not (f == "fused" and config.model.fusion.type == "concat")]
        space += [
            Param("mad.alpha", "log", 0.1, 100.0),
            Param("mad.variant", "choice", choices=("paper", "sp", "official")),
        ]
        if len(features) > 1:
            space.append(Param("mad.feature", "choice", choices=tuple(features)))
    if config.stage == "mmanet" and config.mar.mode != "off":
        space.append(Param("mar.beta", "log", 0.05, 5.0))
        # ω: a warm-up, not most of the run (the paper's code uses 5 of its epochs) — up to a quarter of the run or
        # the configured ω, whichever is larger, and MAR must still run; a range of one value is not searched
        epochs = config.train.max_epochs
        omega = min(max(1, epochs - 1), max(config.mar.warmup_epochs, min(20, epochs // 4)))
        if omega > 1:
            space.append(Param("mar.warmup_epochs", "int", 1, omega))
    if config.kd_active:
        space += [Param("kd.gamma", "log", 0.1, 10.0), Param("kd.temperature", "float", 1.0, 8.0)]
    if config.cmad_active:
        space += [
            Param("cmad.delta", "log", 0.01, 1.0),
            Param("cmad.gamma", "log", 0.1, 10.0),
            Param("cmad.weight_scale", "log", 1.0, 50.0),
            Param("cmad.begin_epoch", "int", 1, max(1, config.train.max_epochs // 2)),
        ]
    if "passion" in method_presets().get(config.method, {}):
        space += [
            Param("passion.kl_weight", "log", 0.05, 5.0),
            Param("passion.proto_weight", "log", 0.01, 1.0),
            Param("passion.temperature", "float", 1.0, 8.0),
        ]
    if config.model.fusion.type == "flexmoe":
        space.append(Param("model.fusion.gate_weight", "log", 1e-3, 1.0))
    return space


def _value_at(dumped: dict[str, Any], key: str) -> Any:
    """The value of dotted ``key`` in a dumped configuration; a component option that is not written (a fusion
    given by its name alone) is its constructor's default; None when there is none."""
    node: Any = dumped
    parts = key.split(".")
    for k, part in enumerate(parts):
        if isinstance(node, str) and k >= 1 and parts[k - 1] == "fusion":  # `fusion: flexmoe`: its defaults
            node = {"type": node}
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and k >= 1 and parts[k - 1] == "fusion":
            from mmanet.models.fusion import FUSIONS

            default = inspect.signature(FUSIONS.get(node["type"]).__init__).parameters.get(part)
            return None if default is None or default.default is inspect.Parameter.empty else default.default
        else:
            return None
    return node


def restrict(space: list[Param], names: Sequence[str]) -> list[Param]:
    """Only the named keys (``--param mad.alpha``); an unknown name lists the valid ones."""
    if not names:
        return space
    valid = [p.key for p in space]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise TuneError(f"--param {unknown[0]!r} is not searched for this configuration; valid: {valid}")
    return [p for p in space if p.key in names]


def apply_params(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key, value in params.items():
        set_dotted(overrides, key, value)
    return deep_merge(raw, overrides)


def params_key(params: dict[str, Any]) -> str:
    """A stable name for a parameter set (its trial's run directory)."""
    text = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def score(table: ResultTable, metric: Metric, weak_set: Sequence[str] | None) -> float:
    """The validation score of one run (lower or higher is better as the table's metric)."""
    if metric == "avg":
        return table.average()[table.metric]
    if metric == "worst5":
        return statistics.fmean(v for _, v in table.worst(WORST_K))
    if not weak_set:
        raise TuneError("--metric weak needs a run that mined a weak set (mar.mode: mined)")
    return statistics.fmean(table.value(name) for name in weak_set)


@dataclass
class TuneSettings:
    trials: int
    metric: Metric = "avg"
    seeds: int = 1
    seed_base: int = 100
    sampler_seed: int = 0
    params: tuple[str, ...] = ()
    #: the Optuna storage (None: ``OUT/study.db``); ``journal:PATH`` for a journal file on a shared file system,
    #: or a database URL (``sqlite:///…``, ``postgresql://…``)
    storage: str | None = None
    #: worker processes started here, all on the one study
    workers: int = 1


class Tuner:
    """One study: ``run()`` finishes ``settings.trials`` complete trials (resuming a stored study)."""

    def __init__(
        self, raw: dict[str, Any], out_dir: Path, settings: TuneSettings, console=None, reads: Reads = ()
    ) -> None:
        #: the user's configuration as given (its own evaluate split, progress bar, seed and teacher)
        self.user_raw = raw
        self.raw = apply_params(raw, {"evaluate.split": "val", "train.progress_bar": False})
        self.base = resolve_run_config(self.raw, source="tune config")
        self.out = Path(out_dir)
        #: what the command reads (the config file): never written over
        self.reads = reads
        self.settings = settings
        self.say: Callable[[str], None] = console.print if console is not None else print
        if settings.trials < 1 or settings.seeds < 1:
            raise TuneError("--trials and --seeds must be at least 1")
        if settings.metric not in METRICS:
            raise TuneError(f"unknown --metric {settings.metric!r}; valid: {list(METRICS)}")
        if settings.metric == "weak" and not (self.base.stage == "mmanet" and self.base.mar.mode == "mined"):
            raise TuneError("--metric weak needs a method that mines a weak set (mar.mode: mined)")
        self.bundle: DataBundle | None = None
        self.space: list[Param] = []
        self.metric_name = "error"

    # ------------------------------------------------------------------ the pieces
    def check_outputs(self) -> None:
        """``--out`` takes this study (module docstring) — checked before anything is loaded or written."""
        from mmanet.training.run_dir import run_part

        out = self.out
        try:
            writable_directory(out, "--out", create=False)
            for name in STUDY_OUTPUTS:
                check_not_read(out / name, self.reads, subject=f"the study's output {out / name}")
        except OutputPathError as err:
            raise TuneError(str(err)) from None
        if not out.is_dir() or (out / "study.db").is_file() or (out / STUDY_MARK).is_file():
            return
        part = run_part(out)
        if part is not None:
            raise TuneError(f"--out {out} is {part} (of mmanet train), not a study's; choose a new directory")
        taken = [name for name in STUDY_OUTPUTS if (out / name).exists() or (out / name).is_symlink()]
        if taken:
            raise TuneError(
                f"--out {out} is not a study directory (no study.db) but already holds {', '.join(taken)}, which "
                "the study would write over; choose a new or empty directory"
            )

    def _prepare(self) -> None:
        from mmanet.models.factory import build_net
        from mmanet.training.factory import load_bundle, quiet_lightning, task_info

        quiet_lightning()
        self.bundle = load_bundle(self.base)
        info = task_info(self.bundle)
        self.metric_name = info.headline(self.base.evaluate.metric)
        net = build_net(self.base.model, info)
        self.space = restrict(search_space(self.base, net.feature_names), self.settings.params)
        if not self.space:
            raise TuneError("nothing to search for this configuration")

    def _study(self):
        import optuna

        # ERROR: Optuna's warnings repeat what mmanet says itself (a diverged trial), and print a traceback
        # block for Ctrl-C ("Trial … failed … KeyboardInterrupt") before mmanet's own message
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        direction = "maximize" if higher_is_better(self.metric_name) else "minimize"
        try:
            study = optuna.create_study(
                study_name=STUDY_NAME, storage=self.storage(), direction=direction, load_if_exists=True
            )
            return self._prepare_study(study)
        except study_storage_errors() as err:
            raise TuneError(self._storage_problem(err)) from None

    def storage(self):
        """The study's Optuna storage (module docstring); a relational one beats a heartbeat, so a worker that dies
        leaves its trial to be failed and run again by the others."""
        import optuna

        url = self.settings.storage or f"sqlite:///{(self.out / 'study.db').resolve()}"
        try:
            if url.startswith("journal:"):
                from optuna.storages.journal import JournalFileBackend

                path = Path(url.removeprefix("journal:")).expanduser()
                if not path.parent.is_dir():
                    raise TuneError(f"--storage {url}: the directory {path.parent} does not exist")
                return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
            return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S)
        except TuneError:
            raise
        except Exception as err:  # SQLAlchemy's ArgumentError, OperationalError, a missing driver …
            if self.settings.storage is None:  # the study's own file: damaged, or not a study
                raise TuneError(self._storage_problem(err)) from None
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TuneError(
                f"--storage {url} cannot be opened ({reason}); give an Optuna storage: sqlite:///PATH, "
                "journal:PATH (a shared file system) or a database URL such as postgresql://…"
            ) from None

    def _storage_problem(self, err: BaseException) -> str:
        db = self.out / "study.db"
        reason = getattr(err, "orig", None) or err
        first = str(reason).strip().splitlines()[0] if str(reason).strip() else type(err).__name__
        if any(word in first.lower() for word in ("disk is full", "readonly", "read-only", "unable to open", "i/o")):
            return (
                f"cannot write the study {db}: {first}. Free some space or make {self.out} writable, then run the "
                "same command again"
            )
        return (
            f"{db} cannot be used as an Optuna study ({first}): it is damaged or not a study. Move it away to start "
            f"the study afresh (finished trial runs in {self.out / 'trials'} are reused), or choose another --out"
        )

    def _prepare_study(self, study):
        study.sampler = _trial_seeded_sampler_class()(self.settings.sampler_seed)
        identity = self._identity()
        stored = study.user_attrs.get("identity")
        if stored is None:
            study.set_user_attr("identity", identity)
        elif stored != identity:
            raise TuneError(
                f"{self.out} holds a study of another configuration, metric, seeds or search space; "
                "choose another --out (or delete that directory) to start a new study"
            )
        self._requeue_interrupted(study, alone=not self._other_workers_alive())
        if not study.get_trials(deepcopy=False):
            baseline = self.baseline_params()
            if baseline:  # trial 0 is the configuration as given: best.yaml is never worse on validation
                study.enqueue_trial(baseline)
        return study

    def baseline_params(self) -> dict[str, Any]:
        """The searched keys' values in the given configuration (those inside the search ranges)."""
        dumped = self.base.model_dump(mode="json")
        values: dict[str, Any] = {}
        for p in self.space:
            node = _value_at(dumped, p.key)
            if node is None:
                continue
            inside = node in p.choices if p.kind == "choice" else p.low <= node <= p.high
            if inside:
                values[p.key] = node
        return values

    def _identity(self) -> dict[str, Any]:
        config = self.base.model_dump(mode="json")
        return {
            "config": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
            "metric": self.settings.metric,
            "seeds": [self.settings.seed_base + k for k in range(self.settings.seeds)],
            "space": [p.describe() for p in self.space],
        }

    @staticmethod
    def _requeue_interrupted(study, alone: bool = True) -> None:
        """Trials left RUNNING by a killed process are marked failed and queued again, same parameters: every
        RUNNING trial when no other worker of the study is alive, else those whose heartbeat stopped."""
        import optuna
        from optuna.trial import TrialState

        if alone:
            for trial in study.get_trials(deepcopy=False):
                if trial.state == TrialState.RUNNING:
                    study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        elif isinstance(study._storage, optuna.storages.RDBStorage):
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        retried = {json.dumps(t.params, sort_keys=True) for t in trials if t.state != TrialState.FAIL}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            key = json.dumps(trial.params, sort_keys=True)
            if trial.params and key not in retried and not trial.user_attrs.get("diverged"):
                study.enqueue_trial(trial.params)  # (skip_if_exists would see the failed trial itself)
                retried.add(key)

    # ------------------------------------------------------------------ workers
    def _worker_file(self) -> Path:
        return self.out / "workers" / f"{os.getpid()}.lock"

    def _other_workers_alive(self) -> bool:
        """Another worker of this study holds its lock file (a file no process holds is a dead worker's: removed)."""
        alive = False
        for path in sorted((self.out / "workers").glob("*.lock")) if (self.out / "workers").is_dir() else []:
            if path == self._worker_file():
                continue
            probe = FileLock(str(path))
            try:
                probe.acquire(timeout=0)
            except Timeout:
                alive = True
                continue
            probe.release()
            path.unlink(missing_ok=True)
        return alive

    def trial_config(self, params: dict[str, Any], seed: int) -> RunConfig:
        raw = apply_params(self.raw, {**params, "seed": seed})
        return resolve_run_config(raw, source=f"tune trial {params}")

    def _shared_teacher(self, config: RunConfig) -> RunConfig:
        """Point an MMANet-family trial at a teacher trained once for its teacher configuration and seed."""
        from mmanet.training.shared_teacher import share_teacher

        assert self.bundle is not None  # loaded before the first trial
        with _waiting_lock(self.out / "workers" / f"teacher_{config.seed}.wait"):  # one trains, the others reuse
            return share_teacher(config, self.out / "teachers", self.bundle)

    def objective(self, trial) -> float:
        from mmanet.benchmark import run_or_reuse
        from mmanet.training.guards import TrainingDivergedError

        params = {p.key: p.suggest(trial) for p in self.space}
        values = []
        for k in range(self.settings.seeds):
            seed = self.settings.seed_base + k
            try:
                config = self._shared_teacher(self.trial_config(params, seed))
            except ConfigError as err:  # a combination the config forbids: not a usable point
                raise TuneError(f"trial {trial_place(trial.study, trial)}: {err}") from None
            run_dir = self.out / "trials" / params_key(params) / f"seed_{seed}"
            assert self.bundle is not None
            try:
                wait = self.out / "workers" / f"{params_key(params)}_seed{seed}.wait"
                with _waiting_lock(wait):  # the same point drawn by two workers: trained once, then reused
                    table, _, summary = run_or_reuse(config, run_dir, self.bundle)
            except TrainingDivergedError as err:  # e.g. a learning rate too high: a failed point, go on
                self.say(f"trial {trial_place(trial.study, trial)} diverged with {params}: {err}")
                trial.set_user_attr("diverged", True)
                return math.nan  # Optuna records a NaN objective as a failed trial

            weak = weak_set_of(summary)
            values.append(score(table, self.settings.metric, weak))
            trial.set_user_attr(f"seed_{seed}", values[-1])
        return statistics.fmean(values)

    # ------------------------------------------------------------------ the study
    def run(self) -> dict[str, Any]:
        """Check ``--out``, run the study (``settings.workers`` processes) and write its outputs (module docstring)."""
        self.check_outputs()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TuneError(f"cannot create --out {self.out}: {err.strerror or err}") from None
        try:
            if self.settings.workers > 1:
                return self._run_workers()
            study = self.work()
            with _waiting_lock(self.out / ".finish.lock"):
                return self.finish(study)
        except study_storage_errors() as err:
            raise TuneError(self._storage_problem(err)) from None

    def _run_workers(self) -> dict[str, Any]:
        """``settings.workers`` processes on the one study, then the outputs from the study as they left it."""
        import multiprocessing
        from dataclasses import replace

        one = replace(self.settings, workers=1)
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(target=_tune_worker, args=(self.user_raw, self.out, one, self.reads), daemon=False)
            for _ in range(self.settings.workers)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        failed = [p.exitcode for p in processes if p.exitcode != 0]
        if failed:
            self.say(f"{len(failed)} of {len(processes)} workers ended with an error (exit codes {failed})")
        self._prepare()
        study = self._study()
        with _waiting_lock(self.out / ".finish.lock"):
            return self.finish(study)

    def work(self):
        """One worker: join the study (its identity checked and trial 0 queued once, under the study's lock),
        then run trials until the study holds ``--trials`` finished ones."""
        (self.out / "workers").mkdir(exist_ok=True)
        mine = FileLock(str(self._worker_file()))
        mine.acquire(timeout=0)
        try:
            return self._run()
        finally:
            mine.release()
            self._worker_file().unlink(missing_ok=True)

    def _run(self) -> dict[str, Any]:
        from optuna.trial import TrialState

        self._prepare()
        with _waiting_lock(self.out / ".study.lock"):  # one worker at a time checks the identity, queues trial 0
            study = self._study()
            mark = {"storage": self.settings.storage or "study.db"}
            if not (self.out / STUDY_MARK).is_file():
                (self.out / STUDY_MARK).write_text(json.dumps(mark) + "\n")
            elif json.loads((self.out / STUDY_MARK).read_text()) != mark:
                raise TuneError(
                    f"{self.out} holds a study kept in {json.loads((self.out / STUDY_MARK).read_text())['storage']}, "
                    f"not in {mark['storage']}: give the same --storage to every worker of a study"
                )
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        remaining = max(0, self.settings.trials - done)
        self.say(
            f"tuning {self.base.method} on the validation split, metric {self.settings.metric} "
            f"({METRICS[self.settings.metric]}), seeds {self._identity()['seeds']}: "
            f"{done} trial(s) done, {remaining} to go"
        )
        for p in self.space:
            self.say(f"  {p.describe()}")

        def report(study, trial) -> None:
            if trial.state == TrialState.COMPLETE:
                self.say(
                    f"trial {trial_place(study, trial)}: {trial.value:.3f} {trial.params}; best so far "
                    f"{study.best_value:.3f} (trial {trial_place(study, study.best_trial)})"
                )

        from optuna.study import MaxTrialsCallback

        # failed (diverged) trials do not count towards --trials; give up after 2N attempts. Several workers stop
        # when the study holds --trials finished trials (each may finish the one it was running: at most
        # workers − 1 more)
        enough = MaxTrialsCallback(self.settings.trials, states=(TrialState.COMPLETE,))
        attempts = 0
        while remaining and attempts < 2 * self.settings.trials:
            study.optimize(self.objective, n_trials=remaining, show_progress_bar=True, callbacks=[report, enough])
            attempts += remaining
            done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            remaining = max(0, self.settings.trials - done)
        return study

    def finish(self, study) -> dict[str, Any]:
        from optuna.trial import TrialState

        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise TuneError(f"no trial of the study in {self.out} finished")
        best = study.best_trial
        original = resolve_run_config(self.user_raw, source="tune config")
        best_raw = apply_params(original.model_dump(mode="json"), best.params)
        best_config = resolve_run_config(best_raw, source="best parameters")
        header = (
            f"# mmanet tune: best of {len(complete)} trial(s) on the VALIDATION split (test never evaluated)\n"
            f"# metric {self.settings.metric} = {best.value:.4f} (mean over tuning seeds "
            f"{self._identity()['seeds']}), trial {trial_place(study, best)}\n"
            f"# tuned: {json.dumps(best.params, default=str)}\n"
        )
        text = yaml.safe_dump(best_config.model_dump(mode="json"), sort_keys=False)
        with writing(self.out / "best.yaml"):
            (self.out / "best.yaml").write_text(header + text)
        with writing(self.out / "trials.csv"):
            self._write_trials(study)
        with writing(self.out / "optimization_history.png"):
            self._plots(study)
        place = trial_place(study, best)
        self.say(f"best trial {place}: {self.settings.metric} = {best.value:.3f} with {best.params}")
        self.say(f"written {self.out / 'best.yaml'}, trials.csv and plots")
        return {"best_params": best.params, "best_value": best.value, "trials": len(complete)}

    def _write_trials(self, study) -> None:
        keys = [p.key for p in self.space]
        with (self.out / "trials.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["trial", "state", "value", *keys])
            for t in study.get_trials(deepcopy=False):
                value = "" if t.value is None else f"{t.value:.4f}"
                writer.writerow([t.number, t.state.name, value, *(t.params.get(k, "") for k in keys)])

    def _plots(self, study) -> None:
        import warnings

        import matplotlib
        import optuna

        matplotlib.use("Agg")
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        import matplotlib.pyplot as plt
        import optuna.visualization.matplotlib as ovm

        plots: dict[str, Callable[[Any], Any]] = {
            "optimization_history": ovm.plot_optimization_history,
            "param_importances": ovm.plot_param_importances,
        }
        for name, plot in plots.items():
            try:
                ax = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. importances of one trial
                self.say(f"  {name}.png not drawn: {err}")
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
            fig.set_size_inches(7, 4.5)
            fig.tight_layout()
            fig.savefig(self.out / f"{name}.png", dpi=110)
            plt.close(fig)


def _waiting_lock(path: Path) -> FileLock:
    """A lock other workers wait for (not the refusing DirectoryLock of a run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def _tune_worker(raw: dict[str, Any], out: Path, settings: TuneSettings, reads: Reads) -> None:
    """The body of one ``--workers`` process (spawned): one worker of the study, without the outputs."""
    from mmanet.cli import environment_problem

    try:
        Tuner(raw, out, settings, None, reads).work()
    except MMANetError as err:
        print(f"error: {err}", flush=True)
        raise SystemExit(2) from None
    except Exception as err:
        problem = environment_problem(err)
        if problem is None:
            raise
        print(f"error: {problem}", flush=True)
        raise SystemExit(2) from None


def tune(
    raw: dict[str, Any], out_dir: str | Path, settings: TuneSettings, console=None, reads: Reads = ()
) -> dict[str, Any]:
    """Run (or continue) the study for the run configuration ``raw``; see the module docstring.
    ``reads``: the files the caller read (the config file), never written over."""
    return Tuner(raw, Path(out_dir), settings, console, reads).run()
