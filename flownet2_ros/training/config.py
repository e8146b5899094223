"""Training configuration: YAML file + ``key=value`` overrides (dotted keys) → a typed ``TrainConfig``.

Sections (see ``config/train_*.yaml`` for annotated examples)::

    model: name, width, thin, div_flow, init (checkpoints to initialise from), train (sub-network(s))
    data:  train / val (data set specs), augment, augment_options, crop_size [h, w], num_workers, val_max_samples
    optim: schedule, lr, iterations, batch_size, betas, weight_decay, grad_clip
    loss:  weights (caffe | pytorch | list), norm (EPE | L1)
    run:   output, seed, device, threads, amp, log_interval, val_interval, checkpoint_interval, validate_at_start,
           tensorboard, progress

A data set spec has ``name``, ``root``, ``split``; every other key goes to the data set's constructor, e.g.
``{name: synthetic, num_samples: 2000, height: 192, width: 256, max_displacement: 12}`` (the generator also
takes ``motion_distribution: small`` and ``camera_effects: true``, see ``flownet2_ros.data.synthetic``) or
``{name: Sintel, root: /data/sintel, split: training, pass: clean}``. An override that changes
``data.train.name`` (or ``data.val.name``) starts a fresh spec: give ``root``/``split`` after it. ``data.val`` ``null`` picks a
held-out set (the synthetic generator with another seed, or the reader's validation split);
``{name: none}`` disables validation.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml


class ConfigError(ValueError):
    """A configuration file or override that cannot be used."""


@dataclass
class DatasetSpec:
    name: str = "synthetic"
    root: str | None = None
    split: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [self.name]
        if self.root:
            parts.append(f"at {self.root}")
        if self.split:
            parts.append(f"split {self.split}")
        if self.options:
            parts.append(", ".join(f"{k}={v}" for k, v in self.options.items()))
        return " ".join(parts)


@dataclass
class ModelConfig:
    name: str = "FlowNet2S"
    width: float = 1.0
    thin: bool = False
    div_flow: float = 20.0
    init: list[str] = field(default_factory=list)
    train: str | None = None


@dataclass
class DataConfig:
    train: DatasetSpec = field(
        default_factory=lambda: DatasetSpec(
            "synthetic", options={"num_samples": 2000, "height": 192, "width": 256}
        )
    )
    val: DatasetSpec | None = None
    augment: bool = False
    augment_options: dict[str, Any] = field(default_factory=dict)
    crop_size: list[int] | None = None
    num_workers: int = 0
    val_max_samples: int = 0


@dataclass
class OptimConfig:
    schedule: str = "S_long"
    lr: float | None = None
    iterations: int | None = None
    batch_size: int = 8
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    grad_clip: float = 0.0


@dataclass
class LossConfig:
    weights: str | list[float] = "caffe"
    norm: str = "EPE"


@dataclass
class RunConfig:
    output: str = "runs/train"
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    amp: bool = False
    log_interval: int = 10
    val_interval: int = 1000
    checkpoint_interval: int = 1000
    validate_at_start: bool = True
    tensorboard: bool = True
    progress: bool = True


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON/torch.load(weights_only=True)-safe); data set options flattened."""
        out = asdict(self)
        for key in ("train", "val"):
            spec = out["data"][key]
            if spec is not None:
                options = spec.pop("options")
                spec.update(options)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _parse_scalar(text: str) -> Any:
    """A ``--set`` value: YAML scalar/list syntax, with numbers such as ``1e-4`` read as numbers."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value {text!r}: {str(exc).splitlines()[0]}") from None
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` to a nested dict in place (creating dicts on the way)."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {assignment!r} is not key=value (e.g. optim.batch_size=4)")
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {part} is not a section")
        node = child
    value = _parse_scalar(text.strip())
    if (
        len(parts) == 3
        and parts[0] == "data"
        and parts[2] == "name"
        and str(node.get("name", "")).lower() != str(value).lower()
    ):
        node.clear()  # another data set: the old spec's root and options do not carry over
    node[parts[-1]] = value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        alternatives = typing.get_args(tp)
        if value is None and type(None) in alternatives:
            return None
        errors = []
        for alternative in alternatives:
            if alternative is type(None):
                continue
            try:
                return _coerce(value, alternative, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {_type_name(tp)}"
        )
    if dataclasses.is_dataclass(tp):
        if value is None:
            raise ConfigError(f"{where}: a section is required")
        return _from_dict(tp, value, where)  # type: ignore[arg-type]
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(number)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _from_dict(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    raw = dict(raw)
    if cls is DatasetSpec:  # every unknown key is a constructor option
        options = dict(raw.pop("options", None) or {})
        options.update({k: raw.pop(k) for k in list(raw) if k not in names})
        raw["options"] = options
    unknown = sorted(set(raw) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown setting(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid: {', '.join(prefix + n for n in names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in raw.items()}
    return cls(**kwargs)


def config_from_dict(tree: dict[str, Any]) -> TrainConfig:
    """Validate and type a nested dict (missing keys take defaults)."""
    defaults = TrainConfig().to_dict()
    defaults["data"]["train"] = None  # replaced wholesale when given, not merged
    merged = _merge(defaults, tree or {})
    if merged["data"]["train"] is None:
        merged["data"]["train"] = TrainConfig().to_dict()["data"]["train"]
    config: TrainConfig = _from_dict(TrainConfig, merged, "")
    validate(config)
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (or start from the defaults) and apply ``key=value`` overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        tree = loaded or {}
    return config_with_overrides(tree, overrides)


def config_with_overrides(tree: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    tree = _merge({}, tree)
    data = tree.get("data")
    if overrides and (data is None or (isinstance(data, dict) and data.get("train") is None)):
        # overrides of single data.train keys refine the default spec rather than replace it
        tree["data"] = {**(data or {}), "train": TrainConfig().to_dict()["data"]["train"]}
    for assignment in overrides:
        apply_override(tree, assignment)
    return config_from_dict(tree)


def validate(config: TrainConfig) -> None:
    """Range checks that need no data or model (raises ConfigError)."""
    from ..models import STACK_NAMES
    from .losses import NORMS, weights_for
    from .schedules import get_schedule

    if config.model.name not in STACK_NAMES:
        raise ConfigError(f"model.name {config.model.name!r} is not one of {', '.join(STACK_NAMES)}")
    if config.model.thin and config.model.width != 1.0:
        raise ConfigError("give model.thin or model.width, not both")
    if not 0 < config.model.width <= 4:
        raise ConfigError(f"model.width must be in (0, 4], got {config.model.width}")
    try:
        get_schedule(config.optim.schedule, config.optim.lr, config.optim.iterations)
    except ValueError as exc:
        raise ConfigError(f"optim: {exc}") from None
    if config.optim.batch_size < 1:
        raise ConfigError("optim.batch_size must be >= 1")
    if len(config.optim.betas) != 2 or not all(0 <= b < 1 for b in config.optim.betas):
        raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {config.optim.betas}")
    if config.optim.weight_decay < 0 or config.optim.grad_clip < 0:
        raise ConfigError("optim.weight_decay and optim.grad_clip must be >= 0")
    if config.loss.norm.upper() not in NORMS:
        raise ConfigError(f"loss.norm must be EPE, L2 or L1, got {config.loss.norm!r}")
    try:
        if isinstance(config.loss.weights, str):
            weights_for(config.loss.weights, 5)
        else:
            weights_for(config.loss.weights, len(config.loss.weights))
    except ValueError as exc:
        raise ConfigError(f"loss.weights: {exc}") from None
    crop = config.data.crop_size
    if crop is not None and (len(crop) != 2 or any(c <= 0 or c % 64 for c in crop)):
        raise ConfigError(f"data.crop_size must be [height, width], positive multiples of 64, got {crop}")
    if config.data.num_workers < 0 or config.data.val_max_samples < 0:
        raise ConfigError("data.num_workers and data.val_max_samples must be >= 0")
    for key in ("log_interval", "val_interval", "checkpoint_interval"):
        if getattr(config.run, key) < 0:
            raise ConfigError(f"run.{key} must be >= 0 (0 = never)")
    if config.run.threads < 0:
        raise ConfigError("run.threads must be >= 0 (0 = automatic)")
    if not config.run.output:
        raise ConfigError("run.output must name a folder")
