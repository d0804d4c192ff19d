"""The space-file language: a ``tune_spaces`` YAML file → a validated ``Space``.

Space files are YAML (read with ``yaml.safe_load``, never evaluated) and validated in full,
every trial config included, before anything starts or is written::

    name: quickstart
    plugins: [my_zo.py]                                        # optional: zeroflow.plugins
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

The language lives in four modules: this one (``Space``, the validated model, and
``load_space``), ``validate`` (every check, one ``ConfigError`` naming file, place and fix),
``resolve`` (a Ray trial's config → trial keys and its name) and ``ray_space`` (a ``Space`` in
Ray Tune's terms). Their public names are importable from here as before.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zeroflow.config import TrialConfig
from zeroflow.errors import ConfigError
from zeroflow.sweep.resolve import (
    GRID_POINT,
    OVERRIDES,
    OverrideValue,
    matches,
    run_name,
    trial_config,
    trial_name,
)
from zeroflow.sweep.validate import (
    RESOURCE_KEYS,
    RUN_KEYS,
    SAMPLERS,
    SPACE_KEYS,
    check_rules_match,
    check_space,
    expand,
    fail,
)


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
        """The Ray Tune ``param_space`` (``zeroflow.sweep.ray_space``)."""
        from zeroflow.sweep.ray_space import param_space

        return param_space(self)

    def apply_overrides(self, point: dict[str, Any]) -> dict[str, Any]:
        """``point`` with every matching override rule's settings applied, in order."""
        out = dict(point)
        for when, settings in self.overrides:
            if matches(when, point):
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
        fail(path, "not valid YAML: " + " ".join(str(err).split()))
    space = Space(**check_space(path, raw, name), text=text)
    check_rules_match(path, space)
    space.configs = expand(path, space)
    return space


# sweeps launched before the split pickled the override function (in their param space) by
# this name; resuming one unpickles it from here
_OverrideValue = OverrideValue


__all__ = ["GRID_POINT", "OVERRIDES", "RESOURCE_KEYS", "RUN_KEYS", "SAMPLERS", "SPACE_KEYS",
           "OverrideValue", "Space", "load_space", "run_name", "trial_config", "trial_name"]
