"""Issue 12 case 16: random configurations and random inputs never end in anything but mmanet's own errors.

Hypothesis throws them at the public API (``resolve_run_config``, ``predict``) and at the CLI
(``train --set``, ``predict``, ``evaluate``, ``export``): each call either succeeds or raises an
:class:`~mmanet.errors.MMANetError`, which the CLI reports with exit code 2 (checked with and
without ``MMANET_DEBUG``, which re-raises the original exception). Training itself is replaced by
a sentinel: a configuration that validates is a success here.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mmanet.cli import app
from mmanet.config import resolve_run_config
from mmanet.deploy.predict import load_predictor, predict
from mmanet.errors import MMANetError
from tests_helpers import make_raw_npz_dataset, npz_run_config

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
runner = CliRunner()

# ----------------------------------------------------------------------------- strategies

KEYS = {
    "": ["method", "stage", "seed", "name", "data", "model", "train", "dropout", "mad", "mar", "teacher", "bogus"],
    "data": ["name", "root", "split_seed", "options", "batch_size", "num_workers", "bogus"],
    "model": ["channels", "encoder", "encoders", "fusion", "head", "dropout", "width", "bogus"],
    "train": ["max_epochs", "lr", "weight_decay", "optimizer", "scheduler", "gradient_clip", "deterministic", "bogus"],
    "dropout": ["mode", "p", "never_drop"],
    "mad": ["alpha", "variant", "feature", "start_epoch"],
    "mar": ["mode", "beta", "warmup_epochs", "num_strong", "mining_split"],
    "teacher": ["checkpoint", "sha256", "max_epochs"],
}
WORDS = ["sf_md", "mmanet", "toy", "npz", "mfeat", "concat", "uniform", "adamw", "paper", "mined", "a", "x"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=6),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def raw_configs(draw) -> dict:
    raw: dict = {}
    for key in draw(st.lists(st.sampled_from(KEYS[""]), max_size=5, unique=True)):
        if key in KEYS and draw(st.booleans()):
            fields = draw(st.lists(st.sampled_from(KEYS[key]), max_size=3, unique=True))
            raw[key] = {f: draw(values) for f in fields}
        else:
            raw[key] = draw(values)
    return raw


@st.composite
def overrides(draw) -> list[str]:
    pairs = []
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from([k for k in KEYS if k]))
        key = f"{section}.{draw(st.sampled_from(KEYS[section]))}"
        value = draw(st.one_of(st.text(max_size=8), st.sampled_from(["true", ".inf", "1e30", "{[:", "[1, 2]", "-3"])))
        pairs.append(f"{key}={value}")
    return pairs


MODALITY_KEYS = ["vec", "seq", "img", "lengths_seq", "present_vec", "present_img", "label", "depth", "lengths_vec"]
arrays = st.one_of(
    st.builds(
        lambda shape, kind, fill: np.full(shape, fill).astype(kind),
        st.lists(st.integers(0, 7), max_size=4).map(tuple),
        st.sampled_from([np.float32, np.float64, np.int64, np.bool_, np.uint8, np.complex64]),
        st.floats(allow_nan=True, allow_infinity=True, width=32) | st.integers(-3, 9),
    ),
    scalars,
)
input_dicts = st.dictionaries(st.sampled_from(MODALITY_KEYS), arrays, max_size=5)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from mmanet.training import run

    root = tmp_path_factory.mktemp("fuzz")
    run(resolve_run_config(npz_run_config(make_raw_npz_dataset(root / "data"), max_epochs=1)), root / "run")
    return root / "run"


def cli_fails_cleanly(args: list[str]) -> None:
    """The command succeeds, or fails with an MMANetError (debug) and exit code 2 with a message (normal)."""
    debug = runner.invoke(app, args, env={"MMANET_DEBUG": "1"})
    if debug.exit_code == 0:
        return
    assert isinstance(debug.exception, MMANetError | _Reached), repr(debug.exception)
    if isinstance(debug.exception, _Reached):
        return
    normal = runner.invoke(app, args)
    lines = normal.output.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
    assert normal.exit_code == 2 and first is not None, normal.output
    assert all(line.startswith(STATUS_LINES) for line in lines[:first]), normal.output  # only status lines before
    assert "Traceback" not in normal.output


#: the status lines a command may print before it fails (issue 24: evaluate, export and predict say what they do)
STATUS_LINES = ("evaluating ", "exporting ", "predicting with ")


class _Reached(Exception):
    """Training would start: the configuration was valid."""


# ----------------------------------------------------------------------------- the API


@FUZZ
@given(raw=raw_configs())
def test_random_configs_are_valid_or_a_config_error(raw):
    with contextlib.suppress(MMANetError):
        resolve_run_config(raw)


@FUZZ
@given(inputs=input_dicts)
def test_random_input_dicts_predict_or_raise_an_input_error(model, inputs):
    predictor = _predictor(model)
    try:
        records = predict(predictor, inputs)
    except MMANetError:
        return
    assert records and all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in records)


_PREDICTORS: dict = {}


def _predictor(path: Path):
    if path not in _PREDICTORS:
        _PREDICTORS[path] = load_predictor(path)
    return _PREDICTORS[path]


# ----------------------------------------------------------------------------- the CLI


@FUZZ
@given(sets=overrides())
def test_cli_train_with_random_overrides(sets):
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "cfg.yaml"
        cfg.write_text(yaml.safe_dump({"method": "sf_md", "data": {"name": "toy"}}))
        with mock.patch("mmanet.training.run", side_effect=_Reached):
            args = ["train", str(cfg), "--out", str(Path(tmp) / "run")]
            cli_fails_cleanly(args + [a for s in sets for a in ("--set", s)])


@FUZZ
@given(files=st.lists(input_dicts, min_size=1, max_size=2))
def test_cli_predict_with_random_npz_files(model, files):
    with tempfile.TemporaryDirectory() as tmp:
        args = ["predict", str(model)]
        for i, content in enumerate(files):
            path = Path(tmp) / f"in{i}.npz"
            try:
                np.savez(path, **{k: np.asarray(v) for k, v in content.items()})
            except (TypeError, ValueError):
                path.write_bytes(b"not an npz")
            args += ["--input", str(path)]
        cli_fails_cleanly(args)


@settings(max_examples=15, deadline=None, database=None)
@given(
    command=st.sampled_from(["evaluate", "export", "predict"]),
    target=st.sampled_from(["missing", "file", "dir", "garbage.ckpt", "run.onnx", "w.safetensors"]),
)
def test_cli_commands_on_random_paths(command, target):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / target
        if target == "dir":
            path.mkdir()
        elif target != "missing":
            path.write_bytes(b"\x00\x01 not a model")
        args = [command, str(path)] + (["--input", str(path)] if command == "predict" else [])
        cli_fails_cleanly(args)
