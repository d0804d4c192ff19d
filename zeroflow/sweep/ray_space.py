"""A ``Space`` in Ray Tune's terms: the ``param_space`` a ``Tuner`` gets.

On the grid path, each grid key becomes a ``tune.grid_search`` (united grids: one over the
points, under ``GRID_POINT``), ``run.num_samples`` becomes seeds when nothing is sampled, each
sampler its distribution, and each key an override rule sets a ``tune.sample_from`` that
resolves it per point. For a searcher, grid keys become categorical choices and the override
rules travel as a constant that ``trial_config`` applies. Ray is imported on use.
"""

from __future__ import annotations

from typing import Any

from zeroflow.config import TrialConfig
from zeroflow.sweep.resolve import GRID_POINT, OVERRIDES, OverrideValue


def param_space(space) -> dict[str, Any]:
    """The Ray Tune ``param_space`` of ``space`` (a ``zeroflow.sweep.space.Space``)."""
    from ray import tune

    if space.searched:
        return searched_space(space)
    out: dict[str, Any] = dict(space.base)
    seeds = None
    if space.seeds_from_samples:
        base_seed = int(space.base.get("seed", 0))
        seeds = [base_seed + i for i in range(space.run["num_samples"])]
    if len(space.grids) == 1:
        grid = dict(space.grids[0])
        if seeds is not None:
            grid["seed"] = seeds
        for key, values in grid.items():
            out[key] = tune.grid_search(list(values))
    else:
        points = space.points()
        if seeds is not None:
            points = [{**p, "seed": seed} for p in points for seed in seeds]
        out[GRID_POINT] = tune.grid_search(points)
    out.update(samplers(space))
    for key in {k for _, settings in space.overrides for k in settings}:
        default = space.base.get(key, TrialConfig.__dataclass_fields__[key].default)
        out[key] = tune.sample_from(OverrideValue(key, space.overrides, default))
    return out


def samplers(space) -> dict[str, Any]:
    """Each ``sample`` key as its Ray distribution."""
    from ray import tune

    out = {}
    for key, spec in space.sample.items():
        (kind, args), = spec.items()
        out[key] = {"loguniform": tune.loguniform, "uniform": tune.uniform,
                    "randint": tune.randint}[kind](*args) if kind != "choice" else (
            tune.choice(list(args)))
    return out


def searched_space(space) -> dict[str, Any]:
    """For a searcher: grid keys become categorical choices, samplers stay distributions,
    and the override rules travel as a constant that ``trial_config`` applies."""
    from ray import tune

    out: dict[str, Any] = dict(space.base)
    for key, values in space.grids[0].items():
        out[key] = tune.choice(list(values))
    out.update(samplers(space))
    if space.overrides:
        out[OVERRIDES] = [[dict(when), dict(settings)] for when, settings in space.overrides]
    return out
