"""The space-file language: a ``tune_spaces`` YAML file → a validated ``Space``.

Space files are YAML (read with ``yaml.safe_load``, never evaluated) and validated in full,
every trial config included, before anything starts or is written::

    name: quickstart
    base: {dataset: digits, epochs: 3}                         # fixed trial keys
    grid: {optimizer: [fo-sgd, zo-sgd], method: [ease, aper]}  # tune.grid_search per key
    sample: {lr: {loguniform: [1.0e-4, 1.0e-1]}}               # optional, with run.num_samples
    overrides:                                                 # optional: per-point settings
      - when: {dataset: cifar100, optimizer: [fo-sgd, zo-sgd]} # all keys match (list: any of)
        set: {lr: 0.025, batch_size: 48}                       # later rules win
    resources: {cpu: 1, gpu: 0}                                # per trial
    run: {max_failures: 2, max_concurrent: 2, num_samples: 1}

An override's ``when`` names grid keys and base keys (e.g. ``{method: aper, dataset: cub}``
with ``method`` fixed in base), and must match at least one grid point: a misspelt value is an
error, not a rule that silently never applies.

``run.num_samples`` doubles as seeds: without a ``sample`` section (and no ``seed`` in the grid)
every grid point runs with seeds base.seed, base.seed + 1, ...; with one, Ray draws
``num_samples`` configurations per grid point.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zeroflow.config import TrialConfig, check_keys, make_config
from zeroflow.errors import ConfigError
from zeroflow.sweep.search import check_scheduler, check_search

SPACE_KEYS = ("name", "description", "base", "grid", "sample", "overrides", "search", "scheduler",
              "resources", "run")
RUN_KEYS = {"max_failures": 0, "max_concurrent": 1, "num_samples": 1}
RESOURCE_KEYS = ("cpu", "gpu")
GRID_POINT = "grid_point"  # param-space key holding a point of united grids
# param-space constant holding the override rules when a searcher (not the grid) picks points:
# searchers cannot resolve ``tune.sample_from``, so ``trial_config`` applies the rules instead
OVERRIDES = "zeroflow_overrides"
SAMPLERS = {"loguniform": 2, "uniform": 2, "randint": 2, "choice": None}



@dataclass
class Space:
    """A validated sweep space. ``grids`` is one grid, or several whose points are united
    (one-factor studies: ``grid: [{history: [...]}, {sparsity: [...]}]``)."""

    name: str
    base: dict[str, Any]
    grids: list[dict[str, list]]
    sample: dict[str, dict[str, list]]
    resources: dict[str, float]
    run: dict[str, int]
    overrides: list[tuple[dict, dict]] = field(default_factory=list)
    text: str = ""
    configs: list[TrialConfig] = field(default_factory=list)
    search: dict[str, Any] | None = None  # zeroflow.sweep.search.check_search
    scheduler: dict[str, Any] | None = None

    @property
    def searched(self) -> bool:
        """A searcher (random, optuna) picks the trials, not the grid."""
        return self.search is not None and self.search["algorithm"] != "grid"

    @property
    def grid_keys(self) -> list[str]:
        return list(dict.fromkeys(k for grid in self.grids for k in grid))

    @property
    def seeds_from_samples(self) -> bool:
        return not self.searched and not self.sample and "seed" not in self.grid_keys

    def points(self) -> list[dict[str, Any]]:
        """Every grid point (the union over the grids, first occurrence kept)."""
        out: list[dict[str, Any]] = []
        for grid in self.grids:
            keys = list(grid)
            for values in itertools.product(*(grid[k] for k in keys)):
                point = dict(zip(keys, values))
                if point not in out:
                    out.append(point)
        return out

    def param_space(self) -> dict[str, Any]:
        from ray import tune

        if self.searched:
            return self._searched_space()
        space: dict[str, Any] = dict(self.base)
        seeds = None
        if self.seeds_from_samples:
            base_seed = int(self.base.get("seed", 0))
            seeds = [base_seed + i for i in range(self.run["num_samples"])]
        if len(self.grids) == 1:
            grid = dict(self.grids[0])
            if seeds is not None:
                grid["seed"] = seeds
            for key, values in grid.items():
                space[key] = tune.grid_search(list(values))
        else:
            points = self.points()
            if seeds is not None:
                points = [{**p, "seed": seed} for p in points for seed in seeds]
            space[GRID_POINT] = tune.grid_search(points)
        space.update(self._samplers())
        for key in {k for _, settings in self.overrides for k in settings}:
            default = self.base.get(key, TrialConfig.__dataclass_fields__[key].default)
            space[key] = tune.sample_from(_OverrideValue(key, self.overrides, default))
        return space

    def _samplers(self) -> dict[str, Any]:
        from ray import tune

        out = {}
        for key, spec in self.sample.items():
            (kind, args), = spec.items()
            out[key] = {"loguniform": tune.loguniform, "uniform": tune.uniform,
                        "randint": tune.randint}[kind](*args) if kind != "choice" else (
                tune.choice(list(args)))
        return out

    def _searched_space(self) -> dict[str, Any]:
        """For a searcher: grid keys become categorical choices, samplers stay distributions,
        and the override rules travel as a constant that ``trial_config`` applies."""
        from ray import tune

        space: dict[str, Any] = dict(self.base)
        for key, values in self.grids[0].items():
            space[key] = tune.choice(list(values))
        space.update(self._samplers())
        if self.overrides:
            space[OVERRIDES] = [[dict(when), dict(settings)] for when, settings in self.overrides]
        return space

    def apply_overrides(self, point: dict[str, Any]) -> dict[str, Any]:
        """``point`` with every matching override rule's settings applied, in order."""
        out = dict(point)
        for when, settings in self.overrides:
            if _matches(when, point):
                out.update(settings)
        return out

    @property
    def num_samples(self) -> int:
        return 1 if self.seeds_from_samples else self.run["num_samples"]

    @property
    def n_trials(self) -> int:
        if self.searched:
            return self.run["num_samples"]
        return len(self.points()) * self.run["num_samples"]

    @property
    def varying(self) -> list[str]:
        keys = self.grid_keys + list(self.sample)
        if self.seeds_from_samples and self.run["num_samples"] > 1:
            keys.append("seed")
        return keys


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """A Ray trial config as trial keys (the united grids' point merged in, and the override
    rules applied where a searcher picked the point)."""
    out = dict(config)
    out.update(out.pop(GRID_POINT, None) or {})
    rules = out.pop(OVERRIDES, None) or []
    for when, settings in rules:
        if _matches(when, out):
            out.update(settings)
    return out


def _matches(when: dict[str, Any], point: dict[str, Any]) -> bool:
    point = trial_config(point)
    return all(point.get(k) in (v if isinstance(v, list) else [v]) for k, v in when.items())


class _OverrideValue:
    """``tune.sample_from`` function: a key's value for a resolved grid point (picklable)."""

    def __init__(self, key: str, rules: list[tuple[dict, dict]], default: Any):
        self.key, self.rules, self.default = key, rules, default

    def __call__(self, config) -> Any:
        # Ray's Tuner hands the spec (the config under ``.config``), ``generate_variants`` the
        # config itself; either resolves here, never through Ray's fallback that logs a
        # deprecation warning per trial
        config = config.config if hasattr(config, "config") else config
        value = self.default
        for when, settings in self.rules:
            if self.key in settings and _matches(when, config):
                value = settings[self.key]
        return value


def _fail(path, msg: str):
    raise ConfigError(f"{path}: {msg}")


def load_space(path: str | os.PathLike, name: str | None = None) -> Space:
    """Read and validate a space file; every trial config is checked before returning."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"space file {path} does not exist; see tune_spaces/ for examples"
                          ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        _fail(path, "not valid YAML: " + " ".join(str(err).split()))
    if not isinstance(raw, dict):
        _fail(path, "must be a mapping with keys " + ", ".join(SPACE_KEYS))
    unknown = sorted(set(raw) - set(SPACE_KEYS))
    if unknown:
        _fail(path, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SPACE_KEYS)}")
    base = raw.get("base") or {}
    grids = raw.get("grid") or {}
    grids = grids if isinstance(grids, list) else [grids]
    sample = raw.get("sample") or {}
    sections = [("base", base), ("sample", sample)] + [
        (f"grid[{i}]" if len(grids) > 1 else "grid", g) for i, g in enumerate(grids)]
    for section, value in sections:
        if not isinstance(value, dict):
            _fail(path, f"'{section}' must be a mapping of trial keys")
        try:
            check_keys(value, where=f"{section}")
        except ConfigError as err:
            _fail(path, str(err))
        if section.startswith("grid"):
            for key, values in value.items():
                if not isinstance(values, list) or not values:
                    _fail(path, f"{section}.{key} must be a non-empty list of values")
    grid = {k: v for g in grids for k, v in g.items()}
    # with united grids, base is the default of points that leave a key out
    overlap = sorted((set(base) & set(grid) if len(grids) == 1 else set()) | (
        set(base) & set(sample)) | (set(grid) & set(sample)))
    if overlap:
        _fail(path, f"key(s) {', '.join(overlap)} appear in more than one of base/grid/sample")
    sample = {key: _check_sampler(path, key, spec) for key, spec in sample.items()}
    overrides = _check_overrides(path, raw.get("overrides") or [], grid, sample, base)
    resources = {"cpu": 1.0, "gpu": 0.0, **(raw.get("resources") or {})}
    bad = sorted(set(resources) - set(RESOURCE_KEYS))
    if bad:
        _fail(path, f"unknown resources key(s) {', '.join(bad)}; allowed: cpu, gpu")
    for key, value in resources.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                key == "cpu" and value == 0):
            _fail(path, f"resources.{key}={value!r} must be a number "
                  + ("> 0" if key == "cpu" else ">= 0"))
    run = {"max_failures": 2, "max_concurrent": 2, "num_samples": 1, **(raw.get("run") or {})}
    bad = sorted(set(run) - set(RUN_KEYS))
    if bad:
        _fail(path, f"unknown run key(s) {', '.join(bad)}; allowed: {', '.join(RUN_KEYS)}")
    for key, lo in RUN_KEYS.items():
        value = run[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            _fail(path, f"run.{key}={value!r} must be an integer >= {lo}")
    space_name = name or raw.get("name") or path.stem
    if not isinstance(space_name, str) or not space_name.replace("-", "").replace(
            "_", "").isalnum():
        _fail(path, f"name {space_name!r} must be letters, digits, '-' or '_'")
    fail = lambda msg: _fail(path, msg)  # noqa: E731
    search = check_search(raw.get("search"), fail)
    scheduler = check_scheduler(raw.get("scheduler"), fail)
    if search and search["algorithm"] != "grid" and len(grids) > 1:
        _fail(path, f"search.algorithm={search['algorithm']} needs one grid (its keys become "
              f"choices); united grids run with algorithm: grid")
    space = Space(space_name, base, grids, sample, resources, run, overrides, text,
                  search=search, scheduler=scheduler)
    for i, (when, _) in enumerate(overrides):
        if not any(_matches(when, {**base, **point}) for point in space.points()):
            where = ", ".join(f"{k}: {v}" for k, v in when.items())
            _fail(path, f"overrides[{i}].when {{{where}}} matches no grid point; check its values")
    space.configs = _expand(path, space)
    return space


def _number(value):
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: take numeric strings as floats."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_sampler(path, key: str, spec) -> dict[str, list]:
    if not isinstance(spec, dict) or len(spec) != 1:
        _fail(path, f"sample.{key} must be one of {{{', '.join(SAMPLERS)}: [...]}}")
    (kind, args), = spec.items()
    if kind not in SAMPLERS:
        _fail(path, f"sample.{key}: unknown sampler {kind!r}; use one of {', '.join(SAMPLERS)}")
    if not isinstance(args, list) or not args:
        _fail(path, f"sample.{key}.{kind} must be a list")
    if SAMPLERS[kind] is not None:
        args = [_number(a) for a in args]
        if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                     for a in args):
            _fail(path, f"sample.{key}.{kind} must be [low, high] numbers")
        lo, hi = args
        if not lo < hi:
            _fail(path, f"sample.{key}.{kind}: low {lo} must be below high {hi}")
        if kind == "loguniform" and lo <= 0:
            _fail(path, f"sample.{key}.loguniform: low {lo} must be > 0")
    return {kind: args}


def _check_overrides(path, rules, grid, sample, base) -> list[tuple[dict, dict]]:
    if not isinstance(rules, list):
        _fail(path, "'overrides' must be a list of {when: {...}, set: {...}}")
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or set(rule) != {"when", "set"} or not all(
                isinstance(rule[k], dict) and rule[k] for k in ("when", "set")):
            _fail(path, f"overrides[{i}] must be {{when: {{key: value}}, set: {{key: value}}}}")
        bad = sorted(set(rule["when"]) - set(grid) - set(base))
        if bad:
            _fail(path, f"overrides[{i}].when may only name grid keys ({', '.join(grid) or 'none'}"
                  f") or base keys ({', '.join(base) or 'none'}), not {', '.join(bad)}")
        try:
            check_keys(rule["set"], where=f"overrides[{i}].set")
        except ConfigError as err:
            _fail(path, str(err))
        clash = sorted(set(rule["set"]) & (set(grid) | set(sample)))
        if clash:
            _fail(path, f"overrides[{i}].set cannot set grid/sample key(s) {', '.join(clash)}")
        out.append((dict(rule["when"]), dict(rule["set"])))
    return out


def _expand(path, space: Space) -> list[TrialConfig]:
    """Every grid point, with each sampler's extreme values, as a validated TrialConfig."""
    keys, choices = [], []
    for key, spec in space.sample.items():
        (kind, args), = spec.items()
        keys.append(key)
        choices.append(list(args) if kind == "choice" else (
            [args[0], args[1] - 1] if kind == "randint" else list(args)))
    configs = []
    for point in space.points():
        for values in itertools.product(*choices):
            full = {**point, **dict(zip(keys, values))}
            try:
                configs.append(make_config(space.apply_overrides({**space.base, **full})))
            except ConfigError as err:
                where = ", ".join(f"{k}={v}" for k, v in full.items())
                _fail(path, f"{err}" + (f" (at {where})" if where else ""))
    return configs



def trial_name(config: dict[str, Any], varying: list[str]) -> str:
    config = trial_config(config)
    varying = [k for k in varying if k in config]
    parts = [f"{k}={config[k]:.3g}" if isinstance(config.get(k), float) else f"{k}={config.get(k)}"
             for k in varying]
    return ",".join(parts) or "trial"
