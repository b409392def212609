"""The benchmark file's schema: a shared ``base`` run configuration, the methods to compare
(each a method name and/or a run-configuration file, plus its own dotted overrides), the number
of seeds, the reference row of the paired differences and the ablation table
(docs/design.md §6, "Benchmark protocol"). :func:`method_config` resolves one method's
:class:`~mmanet.config.RunConfig`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from mmanet.config import (
    ConfigError,
    RunConfig,
    Section,
    deep_merge,
    format_validation_errors,
    parse_overrides,
    read_yaml_mapping,
    resolve_run_config,
    set_dotted,
    with_imports,
)

__all__ = ["BenchmarkConfig", "BenchmarkMethod", "load_benchmark_config", "method_config"]


class BenchmarkMethod(Section):
    #: label in the tables (defaults to the method name)
    label: str | None = None
    #: the method (may be omitted when ``config`` names a file that sets it)
    method: str | None = None
    #: a run configuration file this method starts from, e.g. the ``best.yaml`` of ``mmanet tune``
    #: (relative paths: from the benchmark file). Its sections replace the base config's, except
    #: ``data`` and ``seed``: every method of a benchmark shares the benchmark's data and seeds
    config: str | None = None
    #: dotted overrides applied on top of the base config for this method only
    set: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _method_or_config(self) -> BenchmarkMethod:
        if self.method is None and self.config is None:
            raise ValueError("a benchmark method needs 'method' or 'config' (a run configuration file)")
        return self

    @property
    def display(self) -> str:
        return self.label or self.method or Path(self.config or "").stem


class BenchmarkConfig(Section):
    name: str = "benchmark"
    #: the shared run configuration (data, model, training) every method starts from
    base: dict[str, Any] = Field(default_factory=dict)
    methods: list[BenchmarkMethod] = Field(min_length=1)
    seeds: int = Field(3, gt=0)
    #: label of the method the paired per-seed differences are taken against (default: the first sf_md)
    reference: str | None = None
    #: the Table-6 ablation table: column name → method label (in order); empty = no ablation table
    ablation: dict[str, str] = Field(default_factory=dict)
    #: MMANet-family methods of one seed with the same teacher configuration train ONE teacher, in
    #: ``OUT/shared_teachers/`` (the same weights each would train itself); false: one per run
    share_teachers: bool = True
    #: the probability each modality is available when the model is deployed (independent; unnamed: 1),
    #: e.g. ``{rgb: 0.9, depth: 0.7}``: the report's expected metric and recommendation (deployment.md);
    #: ``--availability`` overrides it
    availability: dict[str, float] | None = None

    @property
    def reference_label(self) -> str:
        if self.reference is not None:
            return self.reference
        return next((m.display for m in self.methods if m.method == "sf_md"), self.methods[0].display)


def load_benchmark_config(
    path: str | Path, overrides: Iterable[str] = (), imports: Iterable[str] = ()
) -> BenchmarkConfig:
    """Benchmark YAML; ``--set`` overrides and ``--import`` entries apply to the shared ``base`` run config."""
    raw = read_yaml_mapping(path)
    if "methods" not in raw and ("method" in raw or "data" in raw or "train" in raw):
        raise ConfigError(
            f"{path} is a run configuration (no methods: list), not a benchmark: train it with mmanet train {path}, "
            "or compare methods with a benchmark file (configs/mfeat/benchmark.yaml is an example)"
        )
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"invalid configuration ({path}): 'base' must be a mapping of run-config keys")
    raw["base"] = with_imports(deep_merge(base, parse_overrides(overrides)), Path(path).parent, imports)
    try:
        config = BenchmarkConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_errors(err, BenchmarkConfig, str(path))) from None
    for m in config.methods:  # method files are read relative to the benchmark file
        if m.config is not None and not Path(m.config).expanduser().is_absolute():
            m.config = str(Path(path).parent / m.config)
    labels = [m.display for m in config.methods]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"benchmark method labels must be unique, got {labels}")
    if "shared_teachers" in labels:
        raise ConfigError("'shared_teachers' is the folder of the shared teachers; give the method another label")
    shared_data: tuple[str, dict[str, Any]] | None = None
    for m in config.methods:  # validate every method's resolved config up front
        data = {key: getattr(method_config(config, m).data, key) for key in SHARED_DATA_KEYS}
        if shared_data is None:
            shared_data = (m.display, data)
        changed = [key for key in SHARED_DATA_KEYS if data[key] != shared_data[1][key]]
        if changed:
            raise ConfigError(
                f"benchmark method {m.display!r} sets data.{changed[0]} to {data[changed[0]]!r}, but "
                f"{shared_data[0]!r} has {shared_data[1][changed[0]]!r}: every method of a benchmark trains on the "
                "same data (loaded and split once); set it in base, or run a second benchmark"
            )
    for column, label in config.ablation.items():
        if label not in labels:
            raise ConfigError(
                f"ablation column {column!r} names {label!r}, which is not a method label; labels: {labels}"
            )
    if config.reference is not None and config.reference not in labels:
        raise ConfigError(f"reference {config.reference!r} is not a method label; labels: {labels}")
    return config


#: the data keys every method of a benchmark shares (the data is loaded, split and masked once)
SHARED_DATA_KEYS = ("name", "root", "split_seed", "options", "missing_rates")


def method_config(bench: BenchmarkConfig, method: BenchmarkMethod, seed: int | None = None) -> RunConfig:
    raw = dict(bench.base)
    if method.config is not None:
        own = {k: v for k, v in read_yaml_mapping(method.config).items() if k not in ("data", "seed", "name")}
        raw = {**raw, **own}  # whole sections replace the base's (a tuned file is complete)
        method_name = method.method or own.get("method")
        if method.method is not None and own.get("method") not in (None, method.method):
            raise ConfigError(
                f"benchmark method {method.display!r}: method {method.method!r} differs from "
                f"{own.get('method')!r} in {method.config}"
            )
    else:
        method_name = method.method
    raw = deep_merge(raw, {"method": method_name, "name": method.display})
    overrides: dict[str, Any] = {}
    for key, value in method.set.items():
        set_dotted(overrides, key, value)
    raw = deep_merge(raw, overrides)
    if seed is not None:
        raw["seed"] = seed
    return resolve_run_config(raw, source=f"benchmark method {method.display!r}")
