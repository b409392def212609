"""Typed, validated run configuration loaded from YAML plus ``--set a.b=value`` overrides.

Resolution order: method preset (the registered method's, :func:`method_presets`) → YAML file → overrides. Every
section forbids unknown keys; an error names the offending key and lists the valid ones.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from mmanet.config_checks import YAMLTooLarge, check_strict_scalars, count_values, load_yaml, non_finite_keys
from mmanet.errors import MMANetError

if TYPE_CHECKING:
    from mmanet.registry import Registry

#: default MAD weight α (batch-size-free scale); chosen on the mfeat validation split (docs/results.md)
ALPHA_DEFAULT = 2.0
#: the largest seed numpy (and so Lightning's seed_everything) accepts; seeds are 0..MAX_SEED
MAX_SEED = 2**32 - 1


class ConfigError(MMANetError):
    """A configuration problem, with the key path and the valid choices in the message."""


class Section(BaseModel):
    """A config section: unknown keys, NaN/infinite floats and booleans given for numbers are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        # a field validator always runs for a named field (field_name is None only in model validators)
        assert info.field_name is not None
        return check_strict_scalars(value, cls.model_fields[info.field_name].annotation)


class DataConfig(Section):
    name: str = "mfeat"
    root: str | None = None
    #: seed of the train/val/test split (kept separate from the training seed)
    split_seed: int = Field(0, ge=0, le=MAX_SEED)
    #: dataset-specific options, e.g. mfeat: protocol (standard | low_label), labels_per_class, modalities
    options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(64, gt=0)
    num_workers: int = Field(0, ge=0)
    #: imbalanced missing rates (PASSION's protocol): each modality removed from this fraction of the training
    #: samples, seeded by split_seed, stratified by class, one modality always kept; val/test unchanged
    #: (:mod:`mmanet.data.missing_rates`). Null: the data as it is.
    missing_rates: dict[str, float] | None = None

    @field_validator("missing_rates")
    @classmethod
    def _rates_in_range(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for name, rate in (value or {}).items():
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"the rate of {name!r} is {rate}; a missing rate is in [0, 1)")
        return value or None

    @model_serializer(mode="wrap")
    def _without_unset_rates(self, handler: SerializerFunctionWrapHandler) -> Any:
        # written only when set: configurations saved before the key existed still match theirs
        dumped = handler(self)
        if isinstance(dumped, dict) and dumped.get("missing_rates") is None:
            dumped.pop("missing_rates", None)
        return dumped


class ComponentSection(BaseModel):
    """A registered component (encoder, head) by ``type``, with its own options as extra keys.

    The options are checked against the component's constructor when the network is built (an
    unknown option is an error listing the valid ones). A plain string is shorthand for ``{type: …}``.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    type: str = "auto"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.options()}


class FusionSection(ComponentSection):
    """``model.fusion``: a registered fusion by ``type`` with its constructor's options as extra keys
    (``{type: dmrnet, hard_warmup: 50}``); a plain string is shorthand for ``{type: …}``. The option names
    are checked when the configuration is validated (:meth:`RunConfig._registered_components`).

    Written back as the plain name when there are no options: the form of the configurations and
    checkpoints saved before fusions took options, so their files, hashes and run directories still match.
    """

    type: str = "concat"

    @model_serializer(mode="wrap")
    def _plain_name_without_options(self, handler: SerializerFunctionWrapHandler) -> Any:
        return handler(self) if self.options() else self.type


class ModelConfig(Section):
    #: feature channels C of every modality encoder's fused level (null: each encoder's own width)
    channels: int | None = Field(64, gt=0, le=65536)
    #: the default encoder section of every modality: ``{type: auto|mlp|gru|tcn|cnn|…, <options>}``
    encoder: ComponentSection = Field(default_factory=lambda: ComponentSection(type="auto", hidden=128))
    #: per-modality encoder sections (override the default's type and options)
    encoders: dict[str, ComponentSection] = Field(default_factory=dict)
    #: the fusion of every fused level: ``{type: concat|se_add|hemis|lcr|…, <options>}`` or its name
    fusion: FusionSection = Field(default_factory=FusionSection)
    #: the head: ``{type: auto|classification|segmentation|…, <options>}`` (auto follows the task)
    head: ComponentSection = Field(default_factory=lambda: ComponentSection(type="auto", hidden=128))
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    #: base width of image backbones (64 = ResNet-18); given to every encoder and head that takes ``width``
    width: int | None = Field(None, gt=0, le=4096)
    #: a torchvision-format ResNet state_dict file (.pth/.pt/.safetensors) loaded into ResNet backbones
    pretrained: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            renamed = {"encoder_hidden": "model.encoder.hidden", "head_hidden": "model.head.hidden"}
            for old, new in renamed.items():
                if old in value:
                    raise ValueError(f"model.{old} was replaced by {new} (each component has its own section)")
        return value


class DropoutConfig(Section):
    mode: Literal["uniform", "bernoulli"] = "uniform"
    #: ``mode: bernoulli``: the keep probability of every modality, or one per modality (in (0, 1])
    p: float | list[float] | None = None
    never_drop: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _keep_probabilities(self) -> DropoutConfig:
        if self.p is not None and self.mode != "bernoulli":
            raise ValueError("dropout.p (keep probabilities) applies to dropout.mode: bernoulli only")
        values = self.p if isinstance(self.p, list) else [] if self.p is None else [self.p]
        if any(not 0.0 < v <= 1.0 for v in values):
            raise ValueError(f"dropout.p: keep probabilities must be in (0, 1], got {self.p}")
        return self


class TrainConfig(Section):
    max_epochs: int = Field(40, gt=0)
    #: above 10 no optimizer here converges; such a value is a typo (1e1 for 1e-1 …)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    #: SGD only: Nesterov momentum (the MMANet authors' classification optimiser)
    nesterov: bool = False
    #: the learning-rate schedule after the warm-up: cosine to 0 over ``max_epochs``, ``multistep``
    #: (× ``lr_gamma`` at each of ``milestones``), or none
    scheduler: Literal["cosine", "multistep", "none"] = "cosine"
    #: linear warm-up: epoch e < N trains at lr·(e+1)/N, then the schedule continues (0 = none)
    warmup_epochs: int = Field(0, ge=0)
    #: ``scheduler: multistep``: the epochs at which the learning rate is multiplied by ``lr_gamma``
    milestones: list[int] = Field(default_factory=list)
    lr_gamma: float = Field(0.1, gt=0, le=1)
    gradient_clip: float | None = Field(None, gt=0)
    #: segmentation loss class weights: none | median_frequency (computed on the training labels)
    class_weights: Literal["none", "median_frequency"] = "none"
    #: weight of a fusion's auxiliary losses (RFNet, mmFormer, LCR)
    aux_weight: float = Field(1.0, ge=0)
    accelerator: str = "cpu"
    #: a number of devices (-1: all), a list such as "0,1", or "auto" (checked by Lightning when training starts)
    devices: int | str = 1
    num_nodes: int = Field(1, gt=0)
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool = True
    #: torch intra-op threads; null: torch's default (one per core). The default, 1, is the fastest for these
    #: small networks on a CPU (measured: mfeat sf_md 29 s against 575 s with torch's default on 2 shared cores);
    #: an execution setting, not part of a run's identity (training.run_dir.EXECUTION_KEYS)
    num_threads: int | None = Field(1, ge=1, le=1024)
    progress_bar: bool = True
    #: evaluate all combinations on the validation split every n epochs (model selection)
    check_val_every_n_epoch: int = Field(1, gt=0)
    #: unlabelled training samples (label -1): ``keep`` (in every batch; only distillation terms use
    #: them), ``drop`` (train on the labelled part), ``auto`` (keep for a stage with a distillation term)
    unlabelled: Literal["auto", "keep", "drop"] = "auto"

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1 and value != -1:
            raise ValueError("must be a number of devices >= 1, -1 (every device), a list such as '0,1', or 'auto'")
        return value

    @model_validator(mode="after")
    def _schedule(self) -> TrainConfig:
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError("train.nesterov applies to train.optimizer: sgd only")
        if self.scheduler == "multistep":
            if not self.milestones:
                raise ValueError("train.scheduler: multistep needs train.milestones (epochs, e.g. [16, 33, 50])")
            if any(m < 1 for m in self.milestones) or sorted(set(self.milestones)) != list(self.milestones):
                raise ValueError(f"train.milestones must be increasing positive epochs, got {self.milestones}")
        elif self.milestones:
            raise ValueError("train.milestones is used by train.scheduler: multistep only")
        return self


class CustomizedConfig(Section):
    #: combinations to train one SF model each for: "all" or a list of canonical names
    combinations: Literal["all"] | list[str] = "all"


class TeacherConfig(Section):
    #: a trained teacher checkpoint; when absent the teacher stage trains one first
    checkpoint: str | None = None
    #: the expected content hash of ``checkpoint`` (weights + model definition); a mismatch is an error
    sha256: str | None = None
    max_epochs: int | None = Field(None, gt=0)
    #: the samples the teacher trains on: ``complete`` (every modality present in the data, the paper's
    #: teacher) or ``all`` (each sample under its own present mask)
    samples: Literal["complete", "all"] = "complete"
    #: the student rows the distillation terms (MAD, SP, KD) use: ``complete`` (rows whose data has every
    #: modality, where the teacher sees what it was trained on) or ``all``
    distill_samples: Literal["complete", "all"] = "complete"


class MADConfig(Section):
    #: weight α of the batch-size-free MAD (``reduction: mean``); chosen on the mfeat validation split
    #: (docs/results.md). In the summed scale of the paper's code: α_sum = α / N (N rows of the relation)
    alpha: float = Field(ALPHA_DEFAULT, ge=0)
    variant: Literal["paper", "sp", "official", "off"] = "paper"
    #: ``mean``: batch-size free (docs/design.md §4.1 step 6, α means the same for every batch size);
    #: ``sum``: the summed form of the authors' code (their α = 30 / 4 / 10 are in this scale)
    reduction: Literal["mean", "sum"] = "mean"
    #: the named network feature distilled (``fused`` or a head feature such as ``embedding``), or a list
    #: of them whose MAD terms are summed (the authors' segmentation: ``[context, skip16, skip8]``);
    #: checked against the network when it is built
    feature: str | list[str] = "embedding"
    start_epoch: int = Field(0, ge=0)
    #: segmentation: a feature map larger than this [H, W] is average-pooled to it (per side: at most
    #: this size, as the authors' 30×40) before per-pixel MAD (null: as is)
    pool_size: list[int] | None = None
    #: ``variant: official`` only: ``whole`` L2-normalises each Gram row over all its columns; ``column_halves``
    #: normalises the first and the second half of the columns separately (the authors' segmentation code;
    #: about twice the ``whole`` value)
    row_normalization: Literal["whole", "column_halves"] = "whole"
    #: the sample weights: ``entropy`` (the teacher's uncertainty, the "margin" of MAD) or ``uniform``
    #: (1/N: the SP ablation of the same relation; ``variant: sp`` is the paper relation, uniform)
    weighting: Literal["entropy", "uniform"] = "entropy"
    #: distil ``feature: fused`` of a concat fusion anyway (an error otherwise; see RunConfig)
    allow_concat_fused: bool = False

    @field_validator("feature")
    @classmethod
    def _features(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            if not value:
                raise ValueError("mad.feature must name at least one feature")
            if len(set(value)) != len(value):
                raise ValueError(f"mad.feature names a feature twice: {value}")
            if len(value) == 1:
                return value[0]
        return value

    @field_validator("pool_size")
    @classmethod
    def _pool_size(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(value) != 2 or any(v < 1 for v in value)):
            raise ValueError(f"mad.pool_size must be [H, W] with positive sizes, got {value}")
        return value

    @property
    def features(self) -> list[str]:
        """The distilled feature names (one or several, summed)."""
        return [self.feature] if isinstance(self.feature, str) else list(self.feature)

    @model_validator(mode="after")
    def _official_only(self) -> MADConfig:
        if self.row_normalization != "whole" and self.variant != "official":
            raise ValueError("mad.row_normalization applies to mad.variant: official only (the Gram relation)")
        return self


class KDConfig(Section):
    """Logit distillation ``γ · T² · KL(softmax(p^t/T) ‖ softmax(p^d/T))`` (Hinton et al.; issue 13)."""

    #: weight γ (0 = off)
    gamma: float = Field(0.0, ge=0)
    #: temperature T (> 0); the T² factor keeps the gradient scale independent of T
    temperature: float = Field(4.0, gt=0, le=100)


class CMADConfig(Section):
    """CMAD (Zhuang et al., ICCV 2025): ``L = Σ_i w_c(i)·CE_i / B + δ·L_CAFD + γ·Σ_i w_c(i)·KD_i / B``
    (:mod:`mmanet.methods.cmad`; the authors' code's defaults, which the paper's text could not be checked
    against here: docs/implementation-notes.md)."""

    #: δ, the weight of the correlation-aware feature distillation (CAFD)
    delta: float = Field(0.1, ge=0)
    #: γ, the weight of the logit distillation (each sample's term weighted by its combination's w)
    gamma: float = Field(1.0, ge=0)
    #: τ, the temperature of CAFD's similarity distributions
    tau: float = Field(0.2, gt=0, le=100)
    #: T, the temperature of the logit distillation (T² keeps the gradient scale)
    temperature: float = Field(2.0, gt=0, le=100)
    #: the epoch from which the combination weights w_c replace 1 (computed from the epochs before it)
    begin_epoch: int = Field(20, ge=0)
    #: the scale of w_c = scale · (d̄_c / max_c' d̄_c')² (the authors' ``--weights``)
    weight_scale: float = Field(20.0, gt=0)
    #: ``once``: w fixed at begin_epoch from every epoch before it (the authors' code); ``every_epoch``:
    #: recomputed at each epoch ≥ begin_epoch from the epoch before (the paper's "curriculum", as read here)
    update: Literal["once", "every_epoch"] = "once"
    #: the per-sample representation CAFD aligns (spatial maps are averaged to one vector per sample)
    feature: str = "embedding"


class PassionConfig(Section):
    """PASSION (Shi et al., ACM MM 2024) on a fusion baseline: self-distillation from the fused prediction to
    each single-modality path, with preference-aware regularization (:mod:`mmanet.methods.passion`; the
    authors' code's defaults)."""

    #: weight of the self-distillation Σ_m β_m·KL_m (their 0.5)
    kl_weight: float = Field(0.5, ge=0)
    #: weight of the prototype term Σ_m r_m·P_m on the modalities that lag (their 0.1)
    proto_weight: float = Field(0.1, ge=0)
    #: temperature of the self-distillation (their 4)
    temperature: float = Field(4.0, gt=0, le=100)
    #: ``authors``: their temp_kl_loss (probabilities clamped to [0.005, 1], the MEAN over classes: 1/K of a
    #: KL); ``kl``: T²·KL summed over classes (K times their scale; what the rows before this option used)
    kl_form: Literal["authors", "kl"] = "authors"
    #: the epoch from which the PASSION terms and the β updates start (their region_fusion_start_epoch, 0)
    start_epoch: int = Field(0, ge=0)
    #: step η of the β update β ← clip(β − η·rp, 0.1, 4), renormalised to ‖β‖ = √M (their 0.01)
    eta: float = Field(0.01, ge=0)
    #: η is multiplied by this every ``eta_every`` epochs (their 1.5 every 100)
    eta_growth: float = Field(1.5, gt=0)
    eta_every: int = Field(100, gt=0)
    #: the representation the prototypes are taken from (the head's ``embedding``; their decoder feature)
    feature: str = "embedding"
    #: ``idt``: train on the data's own masks (their default: the imbalanced missing rates do the dropping);
    #: ``idt_moddrop``: modality dropout on top (for complete data)
    mask: Literal["idt", "idt_moddrop"] = "idt"


class MARConfig(Section):
    mode: Literal["mined", "single", "off"] = "mined"
    #: ``paper``: (1/B) Σ_i m_i CE_i over the weak samples (docs/design.md §4.2); ``official``: what the authors'
    #: code computes — classification (n_weak/B)·Σ_j CE_j over EVERY sample (a broadcasting slip),
    #: segmentation the class-weighted pixel CE of the weak samples, side outputs included
    variant: Literal["paper", "official"] = "paper"
    beta: float = Field(1.0, ge=0)
    #: ω: mining happens after each of the first ω epochs, regularisation from epoch ω on
    warmup_epochs: int = Field(5, ge=1)
    num_strong: int = Field(1, ge=1)
    mining_split: Literal["train", "val"] = "train"


class EvaluateConfig(Section):
    split: Literal["val", "test"] = "test"
    #: the headline metric of the tables and of checkpoint selection: ``auto`` (ACER for anti-spoofing,
    #: mIoU for segmentation, else the error rate) or a registered one (``error``, ``acer``, ``miou`` …)
    metric: str = "auto"

    @field_validator("metric")
    @classmethod
    def _registered_metric(cls, value: str) -> str:
        from mmanet.reducers import METRICS

        if value != "auto" and value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; valid: {['auto', *METRICS.keys()]}")
        return value


class RunConfig(Section):
    #: the user's modules or .py files that register components (mmanet.plugins), imported before the rest of
    #: the configuration is validated; recorded (files as absolute paths) so evaluate/export/predict find them
    imports: list[str] = Field(default_factory=list)
    name: str = "run"
    method: str = "sf_md"
    #: set by the method (its registered stage: what checkpoints record); not a separate choice
    stage: str = "unified"
    #: the training seed (0..MAX_SEED: what numpy accepts)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    dropout: DropoutConfig = Field(default_factory=DropoutConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    customized: CustomizedConfig = Field(default_factory=CustomizedConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    mad: MADConfig = Field(default_factory=MADConfig)
    kd: KDConfig = Field(default_factory=KDConfig)
    mar: MARConfig = Field(default_factory=MARConfig)
    cmad: CMADConfig = Field(default_factory=CMADConfig)
    passion: PassionConfig = Field(default_factory=PassionConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    @model_serializer(mode="wrap")
    def _without_default_sections(self, handler: SerializerFunctionWrapHandler) -> Any:
        # a section added after run directories existed is written when its method reads it or it is set:
        # the configurations of earlier runs still match theirs
        dumped = handler(self)
        preset = method_presets().get(self.method, {})
        for name, default in (("cmad", CMADConfig()), ("passion", PassionConfig())):
            if isinstance(dumped, dict) and name not in preset and getattr(self, name) == default:
                dumped.pop(name, None)
        if isinstance(dumped, dict) and not self.imports:
            dumped.pop("imports", None)  # (the same for runs from before plug-ins)
        return dumped

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        presets = method_presets()
        if value not in presets:
            raise ValueError(f"unknown method {value!r}; valid: {sorted(presets)}")
        return value

    @property
    def mad_active(self) -> bool:
        return self.stage == "mmanet" and self.mad.variant != "off" and self.mad.alpha > 0

    @property
    def kd_active(self) -> bool:
        return self.stage == "mmanet" and self.kd.gamma > 0

    @property
    def cmad_active(self) -> bool:
        """A CMAD method (its preset has a ``cmad`` section) with a distillation term on (δ or γ > 0)."""
        return "cmad" in method_presets().get(self.method, {}) and (self.cmad.delta > 0 or self.cmad.gamma > 0)

    @property
    def uses_unlabelled(self) -> bool:
        """Whether unlabelled training samples reach the training batches (``train.unlabelled``)."""
        if self.train.unlabelled == "auto":
            return self.mad_active or self.kd_active or self.cmad_active
        return self.train.unlabelled == "keep"

    def schedule_warnings(self) -> list[str]:
        """Settings that leave a term or schedule unused within ``train.max_epochs`` (printed at the start of
        training: the run stays valid, as a short smoke run of a paper-setting config must, but says so)."""
        epochs, notes = self.train.max_epochs, []
        if self.stage == "mmanet" and self.mar.mode != "off" and self.mar.warmup_epochs >= epochs:
            notes.append(
                f"mar.warmup_epochs ({self.mar.warmup_epochs}) ≥ train.max_epochs ({epochs}): MAR regularises from "
                "epoch ω on, so it will never run in this run (mar.mode: off says so explicitly)"
            )
        if self.mad_active and self.mad.start_epoch >= epochs:
            notes.append(
                f"mad.start_epoch ({self.mad.start_epoch}) ≥ train.max_epochs ({epochs}): MAD will never run "
                "in this run"
            )
        if self.train.warmup_epochs >= epochs:
            notes.append(
                f"train.warmup_epochs ({self.train.warmup_epochs}) ≥ train.max_epochs ({epochs}): the learning rate "
                "never reaches train.lr"
            )
        return notes

    @model_validator(mode="after")
    def _registered_components(self) -> RunConfig:
        """Every component the model section names is registered (a typo fails here, before any data)."""
        from mmanet.models.encoders import ENCODERS
        from mmanet.models.fusion import FUSIONS
        from mmanet.models.heads import HEADS

        model = self.model
        named: list[tuple[str, str, Registry[Any], bool]] = [
            ("model.fusion", model.fusion.type, FUSIONS, False),
            ("model.head.type", model.head.type, HEADS, True),
        ]
        named.append(("model.encoder.type", model.encoder.type, ENCODERS, True))
        named += [(f"model.encoders.{m}.type", section.type, ENCODERS, True) for m, section in model.encoders.items()]
        for key, name, registry, auto in named:
            if not (auto and name == "auto") and name not in registry:
                hint = difflib.get_close_matches(name, registry.keys(), n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                valid = registry.keys() + (["auto"] if auto else [])
                raise ValueError(f"{key}: unknown {registry.kind} {name!r}{suggestion}; valid: {sorted(valid)}")
        _check_fusion_options(model.fusion)
        return self

    @model_validator(mode="after")
    def _fused_concat_distillation(self) -> RunConfig:
        concat_fused = "fused" in self.mad.features and self.model.fusion.type == "concat"
        if self.mad_active and concat_fused and not self.mad.allow_concat_fused:
            raise ValueError(
                "mad.feature: fused with model.fusion: concat distils the zero-filled concatenation, whose "
                "sample-to-sample relations mostly copy which modalities two samples share under modality "
                "dropout (the mask overlap), not class structure; distil a feature after the first layer "
                "of the head (mad.feature: embedding, the default), or set mad.allow_concat_fused: true to "
                "do it anyway"
            )
        return self


def _check_fusion_options(section: FusionSection) -> None:
    """Every option of ``model.fusion`` is one its fusion's constructor takes (their values are checked when
    the network is built)."""
    from mmanet.models.fusion import fusion_options

    valid = fusion_options(section.type)
    for option in section.options():
        if option not in valid:
            hint = difflib.get_close_matches(option, valid, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(
                f"model.fusion.{option}: fusion {section.type!r} has no option {option!r}{suggestion}; "
                f"valid: {valid or 'none'}"
            )


def method_presets() -> dict[str, dict[str, Any]]:
    """Every registered method's name → the configuration preset it stands for (:mod:`mmanet.methods`:
    each method is listed there once). The user's values win over the preset, except ``stage``."""
    from mmanet.methods import method_presets as registered  # the registry imports this module's types

    return registered()


#: the keys whose value is a component section, for which a plain string is shorthand for ``{type: …}``
COMPONENT_KEYS = frozenset({"encoder", "head", "fusion"})


def _component(key: str, parent: str | None) -> bool:
    return key in COMPONENT_KEYS or parent == "encoders"


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any], parent: str | None = None) -> dict[str, Any]:
    """``update`` merged into ``base`` (mappings recursively). Options given for a component named by a
    plain string (``fusion: dmrnet`` + ``{hard_warmup: 5}``) keep its type: ``{type: dmrnet, hard_warmup: 5}``."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, str) and _component(key, parent):
            current = {"type": current}
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = deep_merge(current, value, key)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["train.lr=0.01", "data.options.protocol=low_label"]`` → nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} must look like key.path=value")
        key, raw = pair.split("=", 1)
        if not key or any(part == "" for part in key.split(".")):
            raise ConfigError(f"override {pair!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
            count_values(value)
        except YAMLTooLarge as err:
            raise ConfigError(f"override {key!r}: {err}") from None
        except yaml.YAMLError as err:
            reason = str(getattr(err, "problem", None) or err).strip()
            raise ConfigError(
                f"override {pair!r}: the value {raw!r} is not valid YAML ({reason}); quote it to pass a string, "
                f"e.g. --set '{key}=\"{raw}\"'"
            ) from None
        set_dotted(nested, key, value)
    return nested


def set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = target
    parent = None
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if isinstance(child, str) and _component(part, parent):  # `fusion=dmrnet`, then `fusion.hard_warmup=5`
            child = node[part] = {"type": child}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is not a section")
        node, parent = child, part
    node[parts[-1]] = value


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the section at ``loc`` (for 'did you mean' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if part.isdigit():  # an index into a list of sections (e.g. methods.0)
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _section_type(field.annotation)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The section model behind ``Section`` or ``list[Section]`` annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def format_validation_errors(err: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        key = ".".join(loc)
        if not loc:
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")
        elif e["type"] == "extra_forbidden":
            valid = _valid_keys(model, loc)
            hint = difflib.get_close_matches(loc[-1], valid, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            lines.append(f"  unknown key {key!r}{suggestion}; valid keys here: {valid}")
        else:
            message = e["msg"].removeprefix("Value error, ")
            lines.append(f"  {key}: {message} (got {e.get('input')!r})")
    return "\n".join(lines)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config path {path} is a directory; pass a YAML file (for example one in configs/)")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = load_yaml(path)
    except (OSError, UnicodeDecodeError, YAMLTooLarge) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if raw is None or raw == {}:
        raise ConfigError(
            f"config file {path} is empty; write at least the method and the data (see configs/, e.g. "
            "configs/mfeat/sf_md.yaml) — an empty file would silently run the defaults"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return raw


def resolve_run_config(raw: Mapping[str, Any], source: str = "config") -> RunConfig:
    """Apply the method preset under ``raw`` and validate."""
    try:
        count_values(raw)  # (a configuration from a file, an override or a checkpoint: bounded before it is walked)
    except YAMLTooLarge as err:
        raise ConfigError(f"invalid configuration ({source}): {err}") from None
    imports = raw.get("imports") or []
    if not isinstance(imports, list):
        raise ConfigError(f"invalid configuration ({source}): imports must be a list of modules or .py files")
    # the installed packages' entry points, and the user's files, before the names they register are checked
    from mmanet.plugins import load_plugins, normalise_imports

    imports = normalise_imports(imports)
    load_plugins(imports)
    raw = {**raw, "imports": imports}
    method = raw.get("method", "sf_md")
    presets = method_presets()
    if not isinstance(method, str) or method not in presets:
        raise ConfigError(
            f"invalid configuration ({source}): unknown method {method!r}; valid: {sorted(presets)}"
        )
    stage = raw.get("stage")
    if stage is not None and stage != presets[method]["stage"]:
        raise ConfigError(
            f"invalid configuration ({source}):\n  stage: {stage!r} does not go with method {method!r} (its stage is "
            f"{presets[method]['stage']!r}); the stage follows from the method: leave it out"
        )
    merged = deep_merge(presets[method], raw)
    bad = next(non_finite_keys(merged), None)
    if bad is not None:
        raise ConfigError(f"invalid configuration ({source}): {bad[0]} is {bad[1]}; every number must be finite")
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(format_validation_errors(err, RunConfig, source)) from None


def load_raw_run_config(path: str | Path, overrides: Iterable[str] = (), imports: Iterable[str] = ()) -> dict[str, Any]:
    """The YAML file with the ``--set`` overrides, as a plain mapping (checked to be a valid config).
    ``imports`` (``--import``) are added to the file's ``imports:``; the file's relative ``.py`` paths are read
    from the file's directory, the others from the working directory."""
    found = read_yaml_mapping(path)
    if "methods" in found and "method" not in found:
        raise ConfigError(
            f"{path} is a benchmark configuration (it lists methods:), not a run configuration: run it with "
            f"mmanet benchmark {path}"
        )
    raw = deep_merge(found, parse_overrides(overrides))
    raw = with_imports(raw, Path(path).parent, imports)
    resolve_run_config(raw, source=str(path))
    return raw


def with_imports(raw: dict[str, Any], base: Path, extra: Iterable[str] = ()) -> dict[str, Any]:
    """``raw`` with its ``imports:`` — relative ``.py`` paths taken from ``base`` — and ``extra`` appended."""
    from mmanet.plugins import is_file_entry

    listed = raw.get("imports") or []
    if not isinstance(listed, list):
        return raw  # (reported by resolve_run_config)
    anchored = [
        str(base / e) if isinstance(e, str) and is_file_entry(e) and not Path(e).expanduser().is_absolute() else e
        for e in listed
    ]
    combined = [*anchored, *extra]
    return {**raw, "imports": combined} if combined else raw


def load_run_config(path: str | Path, overrides: Iterable[str] = (), imports: Iterable[str] = ()) -> RunConfig:
    return resolve_run_config(load_raw_run_config(path, overrides, imports), source=str(path))


def dump_config(config: BaseModel, path: str | Path) -> None:
    from mmanet.outputs import writing

    with writing(path, "the configuration "):
        Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
