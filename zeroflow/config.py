"""``TrialConfig``: every knob of one trial, validated in full before any work starts.

Sources, later ones winning: the defaults below, a YAML file (a mapping of keys), then
``key=value`` overrides. Values are parsed with ``yaml.safe_load`` and coerced to the field's
type; nothing is ever evaluated as code. Unknown keys and bad values raise ``ConfigError`` naming
the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from zeroflow.errors import ConfigError
from zeroflow.key_help import DEVICES_HELP

EASE_VARIANTS = ("standard", "omni")  # omni: EASE's official OmniBenchmark variant (README)
FINETUNE_SCOPES = ("adapter", "full")  # full: the whole backbone, PILOT's finetune baseline
# the enhancements' two forms (zeroflow.optim.enhance; docs/optimizers.md): ours | the authors'
HISTORY_MODES = ("estimate", "direction")
SPARSITY_MASKS = ("exact", "infty")
SPARSITY_RESAMPLES = ("direction", "task", "fixed")  # a new mask per direction | task | trial
# lr when none is given: tuned on the embedded default (see README); Adam-type rules want less.
DEFAULT_LR = {"sgd": 0.01, "adam": 0.001}


def _choice(*allowed):
    return {"choices": allowed}


def _range(lo=None, hi=None, lo_open=False, hi_open=False):
    return {"range": (lo, hi, lo_open, hi_open)}


def _registry(kind: str):
    """The registry a field's values come from (imported on use: they need torch)."""
    if kind == "datasets":
        from zeroflow.data import DATASETS

        return DATASETS
    if kind == "methods":
        from zeroflow.methods import METHODS

        return METHODS
    from zeroflow.optim import REGISTRY

    return REGISTRY


@dataclass
class TrialConfig:
    """One trial: a method trained with an optimizer on one dataset's task sequence."""

    dataset: str = field(default="digits", metadata={"registry": "datasets"})
    method: str = field(default="ease", metadata={"registry": "methods"})
    optimizer: str = field(default="zo-sgd", metadata={"registry": "optimizers"})
    lr: float | None = field(default=None, metadata=_range(0.0, lo_open=True))
    q: int = field(default=1, metadata=_range(1))
    mu: float = field(default=1e-3, metadata=_range(0.0, lo_open=True))
    epochs: int = field(default=3, metadata=_range(0))  # 0: the untrained baseline
    batch_size: int = field(default=32, metadata=_range(1))
    seed: int = field(default=0, metadata=_range(0))
    order_seed: int = field(default=1993, metadata=_range(0))
    init_cls: int | None = field(default=None, metadata=_range(1))
    increment: int | None = field(default=None, metadata=_range(1))
    history: float = field(default=0.0, metadata=_range(0.0, 1.0, hi_open=True))
    history_mode: str = field(default="estimate", metadata=_choice(*HISTORY_MODES))
    sparsity: float = field(default=0.0, metadata=_range(0.0, 1.0, hi_open=True))
    sparsity_mask: str = field(default="exact", metadata=_choice(*SPARSITY_MASKS))
    sparsity_resample: str = field(default="direction", metadata=_choice(*SPARSITY_RESAMPLES))
    hybrid_epochs: int = field(default=0, metadata=_range(0))
    hybrid_fo_lr: float | None = field(default=None, metadata=_range(0.0, lo_open=True))
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0, hi_open=True))
    weight_decay: float = field(default=5e-4, metadata=_range(0.0))
    perturbation: str = field(default="gaussian", metadata=_choice("gaussian", "rademacher"))
    difference: str = field(default="central", metadata=_choice("central", "forward"))
    min_lr: float = field(default=0.0, metadata=_range(0.0))
    zo_lr_schedule: str = field(default="cosine", metadata=_choice("cosine", "constant"))
    fc_lr: float | None = field(default=None, metadata=_range(0.0, lo_open=True))
    mask_old_logits: bool | None = None  # finetune, zofc; unset: each method's own default
    ease_alpha: float = field(default=0.1, metadata=_range(0.0))
    ease_variant: str = field(default="standard", metadata=_choice(*EASE_VARIANTS))
    ease_perturb_prototypes: bool = False  # INFTY's: the prototype classifier in the ZO set
    finetune_scope: str = field(default="adapter", metadata=_choice(*FINETUNE_SCOPES))
    adapter_bottleneck: int = field(default=64, metadata=_range(1))
    backbone: str = "tiny"
    weights: str | None = None
    data_root: str = "data"
    download: bool = False
    device: str = "auto"
    eval_batch_size: int = field(default=256, metadata=_range(1))
    num_workers: int = field(default=0, metadata=_range(0))
    limit_batches: int | None = field(default=None, metadata=_range(1))
    samples_per_class: int | None = field(default=None, metadata=_range(1))
    query_workers: int = field(default=0, metadata=_range(0))
    worker_cpus: float = field(default=1.0, metadata=_range(0.0, lo_open=True))
    worker_gpus: float = field(default=0.0, metadata=_range(0.0))
    # insight analyses (zeroflow.analysis); none changes what training computes
    track_task_losses: int = field(default=0, metadata=_range(0))  # probe every N steps; 0 off
    sharpness: bool = False  # perturbation sharpness after each task
    sharpness_hessian: bool = False  # and the top Hessian eigenvalue (needs sharpness)
    sharpness_scope: str = field(default="all", metadata=_choice("all", "zo"))
    # modules imported before any name is resolved (zeroflow.plugins): "pkg.mod,path/to/x.py"
    plugins: str = ""

    def __post_init__(self):
        from zeroflow import plugins

        if isinstance(self.plugins, (list, tuple)):
            self.plugins = ",".join(str(p) for p in self.plugins)
        self.plugins = ",".join(plugins.absolute(p) for p in plugins.parse(self.plugins or ""))
        plugins.load(self.plugins)  # registers their names before the checks below
        for f in fields(self):
            setattr(self, f.name, _coerce(f, getattr(self, f.name)))
            _check(f, getattr(self, f.name))
        if self.sharpness_hessian and not self.sharpness:
            raise ConfigError("sharpness_hessian=true needs sharpness=true; set both")
        if self.sharpness_scope != "all" and not self.sharpness:
            raise ConfigError(f"sharpness_scope={self.sharpness_scope} needs sharpness=true; "
                              "set both")
        if self.ease_perturb_prototypes and (self.method, self.ease_variant) != (
                "ease", "standard"):
            raise ConfigError("ease_perturb_prototypes=true applies to method=ease with "
                              "ease_variant=standard only; unset it for this method")
        if self.mask_old_logits is not None and self.method not in ("finetune", "zofc"):
            raise ConfigError(f"mask_old_logits applies to finetune and zofc only; unset it "
                              f"for method={self.method}")
        if self.device != "auto" and not _valid_device(self.device):
            raise ConfigError(f"device={self.device!r} is not valid; use {DEVICES_HELP}")
        default_init, default_inc = _registry("datasets")[self.dataset].split
        if self.init_cls is None:
            self.init_cls = default_init
        if self.increment is None:
            self.increment = default_inc

    # -------------------------------------------------------------------- derived values
    @property
    def rule(self) -> str:
        """The update rule, for the default lr: adam for the Adam family, else sgd."""
        family = _registry("optimizers")[self.optimizer].family
        return "adam" if "adam" in self.optimizer or family == "Adam" else "sgd"

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.rule]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _valid_device(device: str) -> bool:
    if device == "cpu" or device == "cuda":
        return True
    return device.startswith("cuda:") and device[5:].isdigit()


def _base_type(f) -> type:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    for name, typ in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if t.startswith(name):
            return typ
    return str


def _optional(f) -> bool:
    return "None" in str(f.type)


def _coerce(f, value):
    if value is None:
        if _optional(f):
            return None
        raise ConfigError(f"{f.name} must not be empty")
    typ = _base_type(f)
    if isinstance(value, str) and _optional(f) and value.strip().lower() in ("none", "null", ""):
        return None
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1"):
                return True
            if str(value).lower() in ("false", "no", "0"):
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise ConfigError(
            f"{f.name}={value!r} is not a valid {typ.__name__}"
            + (" (or none)" if _optional(f) else "")
        ) from None


def _check(f, value) -> None:
    if value is None:
        return
    meta = f.metadata
    choices = _registry(meta["registry"]).names() if "registry" in meta else meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{f.name}={value!r} is not valid; choose one of: {', '.join(choices)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{f.name}={value!r} must be a finite number")
    if "range" in meta:
        lo, hi, lo_open, hi_open = meta["range"]
        ok = (lo is None or (value > lo if lo_open else value >= lo)) and (
            hi is None or (value < hi if hi_open else value <= hi)
        )
        if not ok:
            lo_s = "" if lo is None else ("(" if lo_open else "[") + f"{lo}"
            hi_s = "" if hi is None else f"{hi}" + (")" if hi_open else "]")
            where = f"{lo_s}, {hi_s}" if hi is not None else (
                f"> {lo}" if lo_open else f">= {lo}")
            raise ConfigError(f"{f.name}={value!r} is out of range; it must be {where}")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=0.01", "method=aper"]`` → a dict; values parsed by ``yaml.safe_load``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not key=value (e.g. optimizer=zo-adam)")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = raw if isinstance(value, (dict, list)) else value
    return out


def check_keys(mapping: dict[str, Any], where: str = "config") -> None:
    unknown = sorted(set(mapping) - set(TrialConfig.keys()))
    if unknown:
        raise ConfigError(
            f"unknown {where} key(s) {', '.join(unknown)}; allowed: {', '.join(TrialConfig.keys())}"
        )


def make_config(mapping: dict[str, Any] | TrialConfig | None = None, **overrides) -> TrialConfig:
    """A validated ``TrialConfig`` from a mapping (e.g. a Ray Tune config) plus overrides."""
    if isinstance(mapping, TrialConfig):
        mapping = mapping.to_dict()
    merged = {**(mapping or {}), **overrides}
    check_keys(merged)
    return TrialConfig(**merged)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> TrialConfig:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides."""
    mapping: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path) as fh:
                loaded = yaml.safe_load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist; check the path") from None
        except yaml.YAMLError as err:
            msg = f"config file {path} is not valid YAML: {err}".replace("\n", " ")
            raise ConfigError(msg) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of key: value")
        mapping.update(loaded or {})
    mapping.update(parse_overrides(list(overrides)))
    return make_config(mapping)


def describe_keys() -> list[tuple[str, str, str, str]]:
    """(key, type, default, allowed values) of every ``TrialConfig`` key, in field order (their
    help lines: ``zeroflow.key_help.KEY_HELP``)."""
    out = []
    for f in fields(TrialConfig):
        meta = f.metadata
        allowed = ""
        if "registry" in meta:
            allowed = ", ".join(_registry(meta["registry"]).names())
        elif "choices" in meta:
            allowed = ", ".join(meta["choices"])
        elif "range" in meta:
            lo, hi, lo_open, hi_open = meta["range"]
            allowed = (f"> {lo}" if lo_open else f">= {lo}") if hi is None else (
                f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")
        typ = _base_type(f).__name__ + (" or none" if _optional(f) else "")
        out.append((f.name, typ, "none" if f.default is None else str(f.default), allowed))
    return out
