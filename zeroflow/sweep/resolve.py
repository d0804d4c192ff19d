"""A Ray trial's config as trial keys, and its name.

Ray hands a trainable the point it picked: with united grids the point sits under one key
(``GRID_POINT``), and where a searcher (not the grid) picked it the override rules travel
along as a constant (``OVERRIDES``) to be applied here. ``trial_config`` resolves both;
``OverrideValue`` is the ``tune.sample_from`` function that applies the rules on the grid path.
"""

from __future__ import annotations

from typing import Any

GRID_POINT = "grid_point"  # param-space key holding a point of united grids
# param-space constant holding the override rules when a searcher (not the grid) picks points:
# searchers cannot resolve ``tune.sample_from``, so ``trial_config`` applies the rules instead
OVERRIDES = "zeroflow_overrides"


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """A Ray trial config as trial keys (the united grids' point merged in, and the override
    rules applied where a searcher picked the point)."""
    out = dict(config)
    out.update(out.pop(GRID_POINT, None) or {})
    rules = out.pop(OVERRIDES, None) or []
    for when, settings in rules:
        if matches(when, out):
            out.update(settings)
    return out


def matches(when: dict[str, Any], point: dict[str, Any]) -> bool:
    """Whether an override rule's ``when`` holds at ``point`` (every key; a list: any of)."""
    point = trial_config(point)
    return all(point.get(k) in (v if isinstance(v, list) else [v]) for k, v in when.items())


class OverrideValue:
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
            if self.key in settings and matches(when, config):
                value = settings[self.key]
        return value


class TrialNamer:
    """Tune's ``trial_name_creator``: ``trial_name`` of a trial over the varying keys. A small
    picklable object, not a closure: Tune keeps a pickled copy in every trial's saved state (and
    rewrites them all at each experiment-state save); a lambda over the space pickled the whole
    space, ~19 KB a trial."""

    def __init__(self, varying: list[str]):
        self.varying = list(varying)

    def __call__(self, trial) -> str:
        return trial_name(trial.config, self.varying)


def trial_dirname(trial) -> str:
    """Tune's ``trial_dirname_creator``: a trial's folder is its id."""
    return f"{trial.trial_id}"


def trial_name(config: dict[str, Any], varying: list[str]) -> str:
    """A trial's display name: its values of the ``varying`` keys (``lr=0.01,q=4``)."""
    config = trial_config(config)
    varying = [k for k in varying if k in config]
    parts = [f"{k}={config[k]:.3g}" if isinstance(config.get(k), float) else f"{k}={config.get(k)}"
             for k in varying]
    return ",".join(parts) or "trial"


# the keys a run name states by value alone, in this order; others follow as "key value"
_NAMED_BY_VALUE = ("dataset", "method", "optimizer")


def run_name(config: dict[str, Any], varying: list[str]) -> str:
    """A trial's MLflow run name: what differs between the sweep's trials, read left to right
    (``ease · zo-sgd · q4``, ``zo-adam · lr 0.003 · seed 1``), method before optimizer."""
    config = trial_config(config)
    keys = [k for k in _NAMED_BY_VALUE if k in varying] + [
        k for k in varying if k not in _NAMED_BY_VALUE]
    parts = []
    for key in (k for k in keys if k in config):
        value = config[key]
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(text if key in _NAMED_BY_VALUE else
                     f"q{text}" if key == "q" else f"{key} {text}")
    return " · ".join(parts) or "trial"
