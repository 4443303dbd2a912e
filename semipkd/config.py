"""Typed, frozen configuration read from ``params.yaml``.

``params.yaml`` is the only source of hyperparameters. :func:`load_params` turns it into the
frozen dataclasses below; a key that no dataclass declares, a missing key, or a value of the
wrong type fails at once with a message that names the key and its section, before any heavy
work starts. Stages pass each function the narrow section it needs.

Derived values (a dataset's folder, the device) are computed by methods, never written back.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from semipkd.errors import SemipkdError
from semipkd.names import (
    ALL_BENCHMARKS,
    AUGMENTS,
    BENCHMARKS,
    EMA_MIX_MODES,
    LABELLED_SETS,
    NSS_AGGREGATIONS,
    ON_ERROR,
    PROTOCOLS,
    REAL_ONLY_BENCHMARKS,
    SELECT_METRICS,
)

__all__ = [
    "ConfigError",
    "Params",
    "DataConfig",
    "SyntheticConfig",
    "PrepareConfig",
    "ModelConfig",
    "TrainConfig",
    "NoPseudoConfig",
    "PseudoLabelConfig",
    "EvaluateConfig",
    "ReportConfig",
    "load_params",
    "parse_params",
    "as_plain",
    "BENCHMARKS",
    "LABELLED_SETS",
]

# The vocabulary (benchmark ids, the sets a teacher may learn from, error policies,
# protocols) is semipkd.names'; BENCHMARKS and LABELLED_SETS are re-exported here.


class ConfigError(SemipkdError, ValueError):
    """A params file that cannot be used; the message says what to fix."""


def _choice(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(allowed)}")


def _size(value: tuple[int, ...], where: str) -> None:
    if len(value) != 2 or any(v <= 0 for v in value):
        raise ConfigError(f"{where}: expected [height, width] of two positive ints, got {list(value)}")


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and which benchmarks the pipeline runs."""

    source: str  # synthetic | real
    root: str  # real data: <root>/<name>/
    roots: Mapping[str, str]  # per-dataset folders that override <root>/<name>
    synthetic_root: str  # where prepare writes the generated data
    labelled: str  # the labelled set teacher and student learn from (salicon in the paper)
    benchmarks: tuple[str, ...]
    on_error: str  # raise | skip
    num_workers: int
    # Semi-supervised settings: keep a seeded subset of the labelled set's train split (a count
    # >= 1 or a fraction < 1; null = all of it); teacher and students learn from that subset.
    labelled_subset: float | None = None
    subset_seed: int = 0
    withheld_to_pool: bool = False  # the withheld images join the unlabeled pool (labels unread)

    def __post_init__(self) -> None:
        _choice(self.source, ("synthetic", "real"), "data.source")
        if self.labelled_subset is not None and self.labelled_subset <= 0:
            raise ConfigError(f"data.labelled_subset: must be > 0 (a count or a fraction), got {self.labelled_subset}")
        if self.labelled_subset is not None and self.labelled_subset >= 1 and self.labelled_subset != int(self.labelled_subset):
            raise ConfigError(f"data.labelled_subset: a count must be a whole number, got {self.labelled_subset}")
        if self.withheld_to_pool and self.labelled_subset is None:
            raise ConfigError("data.withheld_to_pool: needs data.labelled_subset (nothing is withheld without it)")
        _choice(self.on_error, ON_ERROR, "data.on_error")
        _choice(self.labelled, LABELLED_SETS, "data.labelled")
        for b in self.benchmarks:
            _choice(b, ALL_BENCHMARKS, "data.benchmarks")
        real_only = [n for n in (self.labelled, *self.benchmarks) if n in REAL_ONLY_BENCHMARKS]
        if real_only and self.source == "synthetic":
            raise ConfigError(
                f"data: {', '.join(real_only)} exists only as real data (no generated version); "
                "set data.source: real and point data.root or data.roots at it"
            )
        for k in self.roots:
            _choice(k, LABELLED_SETS + ("unlabeled",), "data.roots")
        if self.num_workers < 0:
            raise ConfigError("data.num_workers: must be >= 0")

    def folder(self, name: str) -> Path:
        """The folder that holds dataset ``name`` (a benchmark id or ``unlabeled``)."""
        if self.source == "synthetic":
            return Path(self.synthetic_root) / name
        if name in self.roots:
            return Path(self.roots[name])
        return Path(self.root) / name


@dataclass(frozen=True)
class SyntheticConfig:
    """Size of the generated default dataset (used when ``data.source`` is ``synthetic``)."""

    seed: int
    salicon_train: int
    salicon_val: int
    benchmark_images: int
    unlabeled: int
    image_size: tuple[int, int]
    observers: int


@dataclass(frozen=True)
class PrepareConfig:
    """Training resolutions of the prepared caches, (H, W)."""

    input_size: tuple[int, int]  # labelled set and unlabeled pool, into the network
    output_size: tuple[int, int]  # labelled set maps out of the network
    benchmark_size: tuple[int, int]  # fine-tuning benchmarks, in and out (384x384 in the paper)
    # The teacher at its own resolution (both set, or both null = the students' sizes): it trains
    # on the labelled set and labels the pool at these sizes; its maps are cached at the
    # students' output size.
    teacher_input_size: tuple[int, int] | None = None
    teacher_output_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("input_size", "output_size", "benchmark_size"):
            _size(getattr(self, name), f"prepare.{name}")
        if (self.teacher_input_size is None) != (self.teacher_output_size is None):
            raise ConfigError("prepare.teacher_input_size / teacher_output_size: set both, or neither")
        for name in ("teacher_input_size", "teacher_output_size"):
            if getattr(self, name) is not None:
                _size(getattr(self, name), f"prepare.{name}")

    @property
    def teacher_has_own_size(self) -> bool:
        """Whether the teacher works at other sizes than the students (its own prepared caches)."""
        return self.teacher_input_size is not None and (
            tuple(self.teacher_input_size) != tuple(self.input_size)
            or tuple(self.teacher_output_size) != tuple(self.output_size)
        )

    def teacher_sizes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(input, output) size of the teacher: its own, or the students' labelled-set sizes."""
        if self.teacher_input_size is None:
            return self.input_size, self.output_size
        return self.teacher_input_size, self.teacher_output_size


@dataclass(frozen=True)
class ModelConfig:
    """A network: backbone name from the registry, ImageNet weights, decoder width and activation."""

    backbone: str
    pretrained: bool
    weights: str | None  # explicit weight file, looked up first
    width: float
    #: The decoder's activation, ``relu`` or ``swish``; None: the backbone's pairing in the registry
    #: (the paper's: Swish for EEEA-Net and OFA, ReLU for the others).
    decoder_act: str | None = None
    #: True: the head convolution gets a bias, initialised at the start of training to
    #: logit(mean of the labelled training targets), so the head rests at the data's mean value
    #: instead of 0.5 (RetinaNet's prior initialisation). False: the paper's bias-free head.
    head_bias: bool = False

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ConfigError(f"width: must be > 0, got {self.width}")
        if self.decoder_act not in (None, "relu", "swish"):
            raise ConfigError(f"decoder_act: must be relu, swish or null (the backbone's pairing), got {self.decoder_act!r}")


@dataclass(frozen=True)
class LossWeights:
    """Labelled loss: kld*KLD + cc*(1-CC) + nss*(1-sigmoid(NSS))."""

    kld: float
    cc: float
    nss: float


@dataclass(frozen=True)
class PseudoLossWeights:
    """Pseudo-label loss: kld*KLD + cc*(1-CC) + sim*(1-SIM)."""

    kld: float
    cc: float
    sim: float


@dataclass(frozen=True)
class TrainConfig:
    """One training run of the engine (teacher, distillation and fine-tuning alike)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    # The EMA's averaging horizon: a per-step decay (the paper's 0.999), or ``null`` and a horizon
    # in epochs that the engine turns into a decay for this run's steps per epoch.
    ema_decay: float | None
    ema_mix: float
    ema_start_epoch: int
    grad_clip: float  # 0 = off
    amp: bool  # CUDA only; bf16 where supported, else fp16 with a grad scaler
    channels_last: bool
    loss: LossWeights
    nonfinite: str  # raise | skip
    num_workers: int
    holdout: float  # fraction of the train split held out to select the best epoch
    select_on: str  # holdout (ours) | val (the paper's selection on the reported split)
    # Weights of the pseudo-label loss; a run with them gets one pseudo-label pass per epoch
    # (distill's Semi-PKD arm, and finetune's when set: the paper code's intent).
    pseudo_loss: PseudoLossWeights | None = None
    ema_horizon_epochs: float | None = None  # set instead of ema_decay
    ema_mix_mode: str = "raw"  # raw (the paper's code) | normalized (mix of distributions)
    select_metric: str = "paper_sum"  # the paper code's metric sum; loss | kld | cc | nss | sim
    augment: tuple[str, ...] = ("hflip", "color_jitter")  # the labelled data's (the paper: SALICON)
    pseudo_augment: tuple[str, ...] = ("hflip", "color_jitter", "trivial_augment")  # the pool's
    # Images of the pool each epoch's pseudo pass draws (a new seeded draw per epoch, without
    # replacement); null: the whole pool. Ignored by a run without a pseudo pass.
    pool_draw: int | None = None
    # The labelled loss's NSS term: per_image, the batch mean of 1 - sigmoid(NSS_i) (ours), or
    # batch_mean, 1 - sigmoid(the batch mean of NSS_i) (the paper's code).
    nss_aggregation: str = "per_image"

    def __post_init__(self) -> None:
        _choice(self.nonfinite, ON_ERROR, "nonfinite")
        _choice(self.select_on, ("holdout", "val"), "select_on")
        _choice(self.ema_mix_mode, EMA_MIX_MODES, "ema_mix_mode")
        _choice(self.nss_aggregation, NSS_AGGREGATIONS, "nss_aggregation")
        _choice(self.select_metric, tuple(SELECT_METRICS), "select_metric")
        for key in ("augment", "pseudo_augment"):
            for a in getattr(self, key):
                _choice(a, AUGMENTS, key)
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"holdout: must be in (0, 1), got {self.holdout}")
        if self.epochs < 0 or self.batch_size <= 0:
            raise ConfigError(f"epochs must be >= 0 and batch_size > 0 (got {self.epochs}, {self.batch_size})")
        if (self.ema_decay is None) == (self.ema_horizon_epochs is None):
            raise ConfigError(
                "ema_decay / ema_horizon_epochs: set exactly one (a per-step decay, or a horizon in epochs "
                f"with ema_decay: null); got {self.ema_decay} and {self.ema_horizon_epochs}"
            )
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay: must be in [0, 1), got {self.ema_decay}")
        if self.pool_draw is not None and self.pool_draw < 1:
            raise ConfigError(f"pool_draw: must be >= 1 images per epoch (or null: the whole pool), got {self.pool_draw}")
        if self.ema_horizon_epochs is not None and self.ema_horizon_epochs <= 0:
            raise ConfigError(f"ema_horizon_epochs: must be > 0, got {self.ema_horizon_epochs}")


#: ``distill_no_pseudo.steps`` words: the epoch-matched control (today's) and the step-matched one.
NO_PSEUDO_STEPS = ("epochs", "match_semi_pkd")


@dataclass(frozen=True)
class NoPseudoConfig:
    """``distill_no_pseudo``: how long the labelled-only student trains (the rest is ``distill``'s).

    ``steps``: ``epochs`` (default, the epoch-matched control): ``distill.epochs`` passes over the
    labelled set, far fewer optimizer steps than the Semi-PKD arm, whose epochs also hold a pseudo
    pass. ``match_semi_pkd`` (the step-matched control): as many optimizer steps as the Semi-PKD
    arm of the same config takes, computed from the config and the prepared data (labelled train
    rows, pool size or ``distill.pool_draw``, batch, epochs), never from that stage's outputs. An
    integer: that many optimizer steps. With a step budget the run takes as many labelled epochs
    as the budget needs, the last one cut at the budget; the learning-rate cosine, the EMA horizon
    and the EMA start follow the budget (docs/training.md, "A step budget").
    """

    steps: str | int = "epochs"

    def __post_init__(self) -> None:
        if isinstance(self.steps, str):
            if self.steps not in NO_PSEUDO_STEPS:
                raise ConfigError(f"steps: {self.steps!r} is not one of epochs, match_semi_pkd or a number of optimizer steps")
        elif self.steps < 1:
            raise ConfigError(f"steps: a number of optimizer steps must be >= 1, got {self.steps}")

    @property
    def budget(self) -> bool:
        """Whether the run has a step budget (anything but the epoch-matched default)."""
        return self.steps != "epochs"


@dataclass(frozen=True)
class PseudoLabelConfig:
    """``pseudolabel``: the teacher labels the unlabeled pool once; maps cached as uint8 shards."""

    batch_size: int
    store_size: tuple[int, int]  # (H, W) the maps are stored at; upsampled to the output at load
    shard_size: int
    blur: bool = True  # the teacher's eval-mode blur on its maps (the paper's code: on)


@dataclass(frozen=True)
class EvaluateConfig:
    """``evaluate``: scoring under the two protocols on each benchmark's val split."""

    batch_size: int
    protocols: tuple[str, ...]
    center_bias_sigma: float  # see semipkd.evaluate.center_bias_map
    num_figures: int

    def __post_init__(self) -> None:
        for p in self.protocols:
            _choice(p, PROTOCOLS, "evaluate.protocols")


@dataclass(frozen=True)
class ReportConfig:
    """``report``: tables and figures."""

    latency_input_size: tuple[int, int]
    latency_repeats: int


@dataclass(frozen=True)
class Params:
    """The whole of ``params.yaml``."""

    seed: int
    device: str  # auto | cpu | cuda
    data: DataConfig
    synthetic: SyntheticConfig
    prepare: PrepareConfig
    teacher: ModelConfig
    student: ModelConfig
    train_teacher: TrainConfig
    pseudolabel: PseudoLabelConfig
    distill: TrainConfig
    finetune: TrainConfig
    evaluate: EvaluateConfig
    report: ReportConfig
    # A params file from before the section: the epoch-matched control it always ran.
    distill_no_pseudo: NoPseudoConfig = NoPseudoConfig()

    def __post_init__(self) -> None:
        _choice(self.device, ("auto", "cpu", "cuda"), "device")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin in (Mapping, dict, collections.abc.Mapping) or tp is Mapping:
        if value is None:
            return types.MappingProxyType({})
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = typing.get_args(tp) or (str, Any)
        return types.MappingProxyType(
            {_coerce(k, key_tp, where): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
        )
    if tp is Any:
        return value
    if tp is float:
        # YAML reads 1e-3 as a string and 1 as an int: accept ints, refuse bools and strings.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {_type_name(tp)} at {where}")  # a bug here, not in params


def _build(cls: type, raw: Any, section: str) -> Any:
    """Build dataclass ``cls`` from mapping ``raw``; ``section`` names it in errors."""
    label = section or "params.yaml"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        hints_txt = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), names, n=1)
            hints_txt.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} in section {label}: {', '.join(hints_txt)}; "
            f"known keys: {', '.join(names)}"
        )
    optional = {f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    missing = [n for n in names if n not in raw and n not in optional]
    if missing:
        raise ConfigError(f"missing key{'s' if len(missing) > 1 else ''} in section {label}: {', '.join(missing)}")
    values = {}
    for name in names:
        if name not in raw:
            continue  # an optional key left out: the dataclass default
        where = f"{section}.{name}" if section else name
        values[name] = _coerce(raw[name], hints[name], where)
    try:
        return cls(**values)
    except ConfigError as exc:
        msg = str(exc)
        if section and not msg.startswith(section):
            msg = f"{section}.{msg}" if ":" in msg.split()[0] else f"{section}: {msg}"
        raise ConfigError(msg) from None


def parse_params(raw: Mapping[str, Any]) -> Params:
    """Build :class:`Params` from an already-loaded mapping (e.g. ``yaml.safe_load`` output)."""
    return _build(Params, raw, "")


def as_plain(obj: Any) -> Any:
    """A config (dataclass, mapping, tuple) as plain JSON-able dicts and lists (paths as str)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: as_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): as_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; raise :class:`ConfigError` naming the file and what is wrong."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_params(raw or {})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
