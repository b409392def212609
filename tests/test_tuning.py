"""`mmanet tune`: the search space follows the method, trials never evaluate test, a study resumes, best.yaml trains."""

from __future__ import annotations

import math

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from mmanet.benchmark_config import load_benchmark_config, method_config
from mmanet.cli import app
from mmanet.config import resolve_run_config
from mmanet.tuning import Param, TuneError, Tuner, TuneSettings, restrict, score, search_space, tune
from tests_helpers import write_yaml


def _raw(method: str, **extra) -> dict:
    from conftest import tiny_raw

    raw = tiny_raw(method, train={"max_epochs": 2, "lr": 0.01, "progress_bar": False})
    raw["teacher"] = {"max_epochs": 1}
    raw["mar"] = {"warmup_epochs": 1}
    raw.update(extra)
    return raw


def _keys(method: str, **extra) -> list[str]:
    config = resolve_run_config(_raw(method, **extra))
    return [p.key for p in search_space(config, ("fused", "embedding"))]


def test_the_search_space_follows_the_methods_knobs():
    assert _keys("sf_md") == ["train.lr"]
    assert _keys("mad") == ["train.lr", "mad.alpha", "mad.variant"]  # concat: 'fused' is not offered
    assert _keys("mad", model={"fusion": "hemis", "channels": 8}) == [
        "train.lr",
        "mad.alpha",
        "mad.variant",
        "mad.feature",
    ]
    # 2 epochs: ω can only be 1 (MAR must run), so it is not searched (issue 24: it was, over [1, 1])
    assert _keys("mmanet") == ["train.lr", "mad.alpha", "mad.variant", "mar.beta"]
    assert _keys("kd") == ["train.lr", "kd.gamma", "kd.temperature"]
    space = search_space(resolve_run_config(_raw("mmanet")), ("fused", "embedding"))
    assert [p.key for p in restrict(space, ["mad.alpha"])] == ["mad.alpha"]
    with pytest.raises(TuneError, match=r"--param 'kd.gamma' is not searched.*valid: \['train.lr'"):
        restrict(space, ["kd.gamma"])
    # ω up to a quarter of the run or the configured ω (issue 24: with ω = 2 of 4 epochs the range was [1, 1])
    longer = _raw("mmanet", train={"max_epochs": 4, "lr": 0.01, "progress_bar": False}, mar={"warmup_epochs": 2})
    space = search_space(resolve_run_config(longer), ("fused", "embedding"))
    assert next(p for p in space if p.key == "mar.warmup_epochs").high == 2
    forty = _raw("mmanet", train={"max_epochs": 40, "lr": 0.01, "progress_bar": False}, mar={"warmup_epochs": 5})
    space = search_space(resolve_run_config(forty), ("fused", "embedding"))
    assert next(p for p in space if p.key == "mar.warmup_epochs").high == 10


def test_score_of_each_metric(tmp_path):
    from mmanet.modality import ModalitySpec, all_combinations
    from mmanet.results import ResultTable

    spec = ModalitySpec(("a", "b", "c"))
    rows = [(c, {"error": float(10 * k)}) for k, c in enumerate(all_combinations(spec))]  # 0, 10, …, 60
    table = ResultTable(spec, rows, "error")
    assert score(table, "avg", None) == pytest.approx(30.0)
    assert score(table, "worst5", None) == pytest.approx((60 + 50 + 40 + 30 + 20) / 5)
    weak = [rows[0][0].name, rows[1][0].name]
    assert score(table, "weak", weak) == pytest.approx(5.0)
    with pytest.raises(TuneError, match="mined"):
        score(table, "weak", None)


def test_a_study_never_evaluates_test_resumes_and_writes_a_trainable_best_yaml(tmp_path, monkeypatch):
    import mmanet.training.runner as runner

    evaluated: list[tuple[str, ...]] = []
    original = runner.evaluate_tables

    def spy(net, bundle, config, combinations=None, splits=("val", "test")):
        evaluated.append(tuple(splits))
        return original(net, bundle, config, combinations, splits=splits)

    monkeypatch.setattr(runner, "evaluate_tables", spy)
    out = tmp_path / "study"
    settings = TuneSettings(trials=2, params=("mad.alpha", "mar.beta"))
    first = tune(_raw("mmanet"), out, settings)
    assert first["trials"] == 2 and set(first["best_params"]) == {"mad.alpha", "mar.beta"}
    assert evaluated and all(splits == ("val",) for splits in evaluated)  # teacher and students: val only
    assert not list(out.glob("**/per_combination_test.csv"))
    # trials of one seed share ONE teacher (lr is not searched here)
    assert len(list((out / "teachers").iterdir())) == 1
    # the stored study: two complete trials with the trials' own seeds recorded
    study = optuna.load_study(study_name="mmanet", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert study.trials[0].params == {"mad.alpha": 2.0, "mar.beta": 1.0}  # trial 0: the config as given
    assert all("seed_100" in t.user_attrs for t in study.trials)
    # a trial left RUNNING by a killed process is queued again with the same parameters; the study grows to 3
    crashed = study.ask(
        {
            "mad.alpha": optuna.distributions.FloatDistribution(0.1, 100.0, log=True),
            "mar.beta": optuna.distributions.FloatDistribution(0.05, 5.0, log=True),
        }
    )
    params = dict(crashed.params)
    third = tune(_raw("mmanet"), out, TuneSettings(trials=3, params=("mad.alpha", "mar.beta")))
    assert third["trials"] == 3
    study = optuna.load_study(study_name="mmanet", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 3 and states.count(TrialState.FAIL) == 1
    assert study.trials[-1].params == params  # the interrupted point, run again
    assert (out / "optimization_history.png").stat().st_size > 0 and (out / "trials.csv").is_file()
    # best.yaml: the user's seed, split and teacher, the best parameters; mmanet train accepts it
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["seed"] == 0 and best["evaluate"]["split"] == "test" and best["teacher"]["checkpoint"] is None
    assert math.isclose(best["mad"]["alpha"], third["best_params"]["mad.alpha"])
    result = CliRunner().invoke(app, ["train", str(out / "best.yaml"), "--out", str(tmp_path / "train")])
    assert result.exit_code == 0, result.output
    # a benchmark entry can point at it: its sections apply, the benchmark's data and seeds stay
    bench = write_yaml(
        tmp_path / "bench.yaml",
        {"base": _raw("sf_md"), "methods": [{"label": "tuned", "config": str(out / "best.yaml")}, {"method": "sf_md"}]},
    )
    cfg = method_config(load_benchmark_config(bench), load_benchmark_config(bench).methods[0], seed=4)
    assert cfg.method == "mmanet" and cfg.seed == 4 and math.isclose(cfg.mad.alpha, best["mad"]["alpha"])


def test_a_study_of_another_configuration_is_refused(tmp_path):
    out = tmp_path / "study"
    tune(_raw("sf_md"), out, TuneSettings(trials=1))
    with pytest.raises(TuneError, match="another configuration"):
        tune(
            _raw("sf_md", seed=3, train={"max_epochs": 1, "lr": 0.01, "progress_bar": False}),
            out,
            TuneSettings(trials=1),
        )


def test_cli_errors(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", _raw("sf_md"))
    runner = CliRunner()
    result = runner.invoke(
        app, ["tune", str(config), "--trials", "1", "--out", str(tmp_path / "o"), "--metric", "best"]
    )
    assert result.exit_code == 2 and "unknown --metric 'best'" in result.output
    result = runner.invoke(
        app, ["tune", str(config), "--trials", "1", "--out", str(tmp_path / "o"), "--metric", "weak"]
    )
    assert result.exit_code == 2 and "mines a weak set" in result.output
    result = runner.invoke(app, ["tune", str(config), "--trials", "0", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "at least 1" in result.output


def test_param_describes_itself():
    assert Param("train.lr", "log", 1e-4, 1e-2).describe() == "train.lr ∈ [0.0001, 0.01] (log)"
    assert Param("mad.variant", "choice", choices=("paper", "sp")).describe() == "mad.variant ∈ ['paper', 'sp']"
    with pytest.raises(TuneError):
        Tuner(_raw("sf_md"), __import__("pathlib").Path("/tmp/x"), TuneSettings(trials=0))


def test_a_diverged_trial_is_recorded_as_failed_and_not_retried(tmp_path, monkeypatch):
    import mmanet.benchmark as benchmark
    from mmanet.training.guards import TrainingDivergedError

    real = benchmark.run_or_reuse
    calls = {"n": 0}

    def diverge_first(config, run_dir, bundle):
        calls["n"] += 1
        if calls["n"] == 1:
            raise TrainingDivergedError("training diverged: the training loss became NaN")
        return real(config, run_dir, bundle)

    monkeypatch.setattr(benchmark, "run_or_reuse", diverge_first)
    out = tmp_path / "study"
    tune(_raw("sf_md"), out, TuneSettings(trials=1))
    study = optuna.load_study(study_name="mmanet", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[0].user_attrs["diverged"] is True
    tune(_raw("sf_md"), out, TuneSettings(trials=2))  # resumed: the diverged point is not queued again
    study = optuna.load_study(study_name="mmanet", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 3 and study.trials[2].params != study.trials[0].params


# ----------------------------------------------------------------------------- issue 20: one study, clean failures


class _Table:
    """What ``score`` reads of a validation table: a deterministic function of the trial's parameters."""

    metric = "error"

    def __init__(self, value: float) -> None:
        self.value_ = value

    def average(self) -> dict[str, float]:
        return {"error": self.value_}


def _fake_training(monkeypatch, interrupt_at: int | None = None) -> list[dict]:
    """Trials that 'train' instantly: the score is a smooth function of train.lr; call ``interrupt_at`` (1-based)
    raises Ctrl-C once, as a user stopping the study in the middle of a trial."""
    import mmanet.benchmark as benchmark

    calls: list[dict] = []

    def fake(config, run_dir, bundle, *args, **kwargs):
        calls.append({"lr": config.train.lr})
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return _Table((math.log10(config.train.lr) + 2.6) ** 2), None, {}

    monkeypatch.setattr(benchmark, "run_or_reuse", fake)
    return calls


def _complete_points(out) -> list[tuple[float, float]]:
    study = optuna.load_study(study_name="mmanet", storage=f"sqlite:///{out / 'study.db'}")
    return [(t.params["train.lr"], t.value) for t in study.trials if t.state == TrialState.COMPLETE]


def test_an_interrupted_then_resumed_study_draws_the_same_points_as_an_uninterrupted_one(tmp_path, monkeypatch):
    """Issue 20: a rerun after Ctrl-C used to reseed the sampler with the number of stored trials (the failed
    attempt included), so it drew other points and wrote another best.yaml. 12 trials: past TPE's 10 random
    start-up trials, so the model-based draws are compared too."""
    settings = TuneSettings(trials=12)
    _fake_training(monkeypatch)
    tune(_raw("sf_md"), tmp_path / "straight", settings)
    _fake_training(monkeypatch, interrupt_at=6)
    with pytest.raises(KeyboardInterrupt):
        tune(_raw("sf_md"), tmp_path / "stopped", settings)
    _fake_training(monkeypatch)
    tune(_raw("sf_md"), tmp_path / "stopped", settings)  # the same command again
    study = optuna.load_study(study_name="mmanet", storage=f"sqlite:///{tmp_path / 'stopped' / 'study.db'}")
    assert [t.state for t in study.trials].count(TrialState.FAIL) == 1  # the interrupted attempt
    assert _complete_points(tmp_path / "stopped") == _complete_points(tmp_path / "straight")
    assert len(_complete_points(tmp_path / "straight")) == 12
    assert (tmp_path / "stopped" / "best.yaml").read_text() == (tmp_path / "straight" / "best.yaml").read_text()


def test_ctrl_c_in_a_trial_is_one_message_without_optunas_traceback(tmp_path, monkeypatch, capfd):
    config = write_yaml(tmp_path / "c.yaml", _raw("sf_md"))
    _fake_training(monkeypatch, interrupt_at=1)
    result = CliRunner().invoke(app, ["tune", str(config), "--trials", "2", "--out", str(tmp_path / "o")])
    printed = result.output + "".join(capfd.readouterr())
    assert result.exit_code == 130, printed
    assert "interrupted (Ctrl-C)" in printed and "finished trials are kept" in printed
    assert "Traceback" not in printed and "failed" not in printed, printed


def test_a_second_tune_on_the_same_out_joins_without_touching_the_first_ones_running_trial(tmp_path):
    """Issue 20: a second tune process marked the first one's running trial as failed. Issue 25: several workers
    share a study — a second one joins, leaves the live worker's trial alone, and another study is refused."""
    from filelock import FileLock

    config = write_yaml(tmp_path / "c.yaml", _raw("sf_md"))
    out = tmp_path / "o"
    (out / "workers").mkdir(parents=True)
    study = optuna.create_study(study_name="mmanet", storage=f"sqlite:///{out / 'study.db'}")
    running = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    with FileLock(str(out / "workers" / "999999.lock")):  # the first worker, alive, in the middle of a trial
        result = CliRunner().invoke(app, ["tune", str(config), "--trials", "1", "--out", str(out)])
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    study = optuna.load_study(study_name="mmanet", storage=f"sqlite:///{out / 'study.db'}")
    states = {t.number: t.state for t in study.trials}
    assert states[running.number] == TrialState.RUNNING and list(states.values()).count(TrialState.COMPLETE) == 1
    other = write_yaml(tmp_path / "d.yaml", _raw("mad"))
    result = CliRunner().invoke(app, ["tune", str(other), "--trials", "1", "--out", str(out)])
    assert result.exit_code == 2 and "holds a study of another configuration" in " ".join(result.output.split())


def test_two_tune_workers_share_one_study(tmp_path):
    """Issue 25: two workers on one --storage finish --trials 6 between them: no failed trial, trial 0 once."""
    config = write_yaml(tmp_path / "c.yaml", _raw("sf_md"))
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["tune", str(config), "--trials", "6", "--out", str(out), "--workers", "2"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="mmanet", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state for t in study.trials]
    assert TrialState.FAIL not in states and 6 <= states.count(TrialState.COMPLETE) <= 7
    defaults = [t for t in study.trials if t.params == study.trials[0].params]
    assert len(defaults) == 1  # trial 0 (the given configuration) ran once
    assert (out / "best.yaml").is_file() and not list((out / "workers").glob("*.lock"))


def test_a_journal_storage_and_a_bad_storage(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", _raw("sf_md"))
    journal = tmp_path / "shared" / "study.log"
    journal.parent.mkdir()
    args = ["tune", str(config), "--trials", "2", "--out", str(tmp_path / "o"), "--storage", f"journal:{journal}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and journal.is_file() and not (tmp_path / "o" / "study.db").exists(), result.output
    result = CliRunner().invoke(app, [*args[:6], "--storage", "nosuchdb://x"])
    assert result.exit_code == 2 and "cannot be opened" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["tune", str(config), "--trials", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "give the same --storage to every worker" in " ".join(result.output.split())
    result = CliRunner().invoke(
        app, ["tune", str(config), "--trials", "1", "--out", str(tmp_path / "p"), "--workers", "0"]
    )
    assert result.exit_code == 2 and "--workers must be at least 1" in result.output


def test_tune_out_that_cannot_hold_a_study_is_one_message(tmp_path, monkeypatch):
    import tempfile
    from pathlib import Path

    config = write_yaml(tmp_path / "c.yaml", _raw("sf_md"))
    runner = CliRunner()

    def refused(out, *needles: str) -> None:
        result = runner.invoke(app, ["tune", str(config), "--trials", "1", "--out", str(out)])
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and "Traceback" not in result.output and said.count("error:") == 1, said
        assert all(n in said for n in needles), said

    (tmp_path / "file").write_text("x")
    refused(tmp_path / "file", "is an existing file")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "study.db").write_text("not a database")
    refused(damaged, "study.db cannot be used as an Optuna study (file is not a database)", "Move it away")
    assert (damaged / "study.db").read_text() == "not a database"
    place = tmp_path / "read_only"  # (tests may run as root, who can write anywhere: creating a file is refused)
    place.mkdir()
    original = tempfile.TemporaryFile

    def refuse(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
        if dir is not None and Path(dir).resolve().is_relative_to(place.resolve()):
            raise PermissionError(13, "Permission denied")
        return original(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    refused(place / "study", "Permission denied", "--out")
    assert not (place / "study").exists()


def test_the_newest_peers_have_their_knobs_in_the_search_space(tiny_config):
    from mmanet.tuning import search_space

    keys = lambda cfg: {p.key for p in search_space(cfg, ["fused", "embedding"])}  # noqa: E731
    assert {"cmad.delta", "cmad.gamma", "cmad.weight_scale", "cmad.begin_epoch"} <= keys(tiny_config("cmad"))
    assert {"passion.kl_weight", "passion.proto_weight", "passion.temperature"} <= keys(tiny_config("passion"))
    assert "model.fusion.gate_weight" in keys(tiny_config("flexmoe"))
    assert not any(k.startswith(("cmad.", "passion.")) for k in keys(tiny_config("sf_md")))


def test_a_fusion_option_given_by_the_fusion_s_name_alone_is_tuned_from_its_default(tmp_path):
    """``model.fusion: flexmoe`` (no options written): trial 0 is the constructor's default gate weight, and the
    option reaches best.yaml as a fusion section (a plain fusion name used to crash the study)."""
    config = write_yaml(tmp_path / "c.yaml", _raw("flexmoe"))
    out = tmp_path / "o"
    result = CliRunner().invoke(
        app, ["tune", str(config), "--trials", "2", "--out", str(out), "--param", "model.fusion.gate_weight"]
    )
    assert result.exit_code == 0, result.output
    trials = (out / "trials.csv").read_text().splitlines()
    assert trials[1].split(",")[3] == "0.01"  # trial 0: the default, then the sampler
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["model"]["fusion"]["type"] == "flexmoe" and "gate_weight" in best["model"]["fusion"]
