"""Validation of a space file, in full, before anything starts: every section's keys and values,
the samplers, the override rules (and that each matches a grid point), resources, run
settings, search and scheduler, and finally every trial config the space can make. Each
problem is one ``ConfigError`` naming the file, the place and the fix."""

from __future__ import annotations

import itertools
from typing import Any

from zeroflow.config import TrialConfig, check_keys, make_config
from zeroflow.errors import ConfigError
from zeroflow.sweep.resolve import matches
from zeroflow.sweep.search import check_scheduler, check_search

SPACE_KEYS = ("name", "description", "plugins", "base", "grid", "sample", "overrides", "search",
              "scheduler", "resources", "run")
RUN_KEYS = {"max_failures": 0, "max_concurrent": 1, "num_samples": 1}
RESOURCE_KEYS = ("cpu", "gpu")
SAMPLERS = {"loguniform": 2, "uniform": 2, "randint": 2, "choice": None}


def fail(path, msg: str):
    raise ConfigError(f"{path}: {msg}")


def check_space(path, raw, name: str | None) -> dict[str, Any]:
    """The checked sections of a parsed space file, as ``Space`` fields."""
    if not isinstance(raw, dict):
        fail(path, "must be a mapping with keys " + ", ".join(SPACE_KEYS))
    unknown = sorted(set(raw) - set(SPACE_KEYS))
    if unknown:
        fail(path, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SPACE_KEYS)}")
    base = raw.get("base") or {}
    if raw.get("plugins") is not None:
        base = {**base, "plugins": check_plugins(path, raw["plugins"], base.get("plugins"))}
    grids = raw.get("grid") or {}
    grids = grids if isinstance(grids, list) else [grids]
    sample = raw.get("sample") or {}
    sections = [("base", base), ("sample", sample)] + [
        (f"grid[{i}]" if len(grids) > 1 else "grid", g) for i, g in enumerate(grids)]
    for section, value in sections:
        if not isinstance(value, dict):
            fail(path, f"'{section}' must be a mapping of trial keys")
        try:
            check_keys(value, where=f"{section}")
        except ConfigError as err:
            fail(path, str(err))
        if section.startswith("grid"):
            for key, values in value.items():
                if not isinstance(values, list) or not values:
                    fail(path, f"{section}.{key} must be a non-empty list of values")
    grid = {k: v for g in grids for k, v in g.items()}
    # with united grids, base is the default of points that leave a key out
    overlap = sorted((set(base) & set(grid) if len(grids) == 1 else set()) | (
        set(base) & set(sample)) | (set(grid) & set(sample)))
    if overlap:
        fail(path, f"key(s) {', '.join(overlap)} appear in more than one of base/grid/sample")
    sample = {key: check_sampler(path, key, spec) for key, spec in sample.items()}
    overrides = check_overrides(path, raw.get("overrides") or [], grid, sample, base)
    resources = {"cpu": 1.0, "gpu": 0.0, **(raw.get("resources") or {})}
    bad = sorted(set(resources) - set(RESOURCE_KEYS))
    if bad:
        fail(path, f"unknown resources key(s) {', '.join(bad)}; allowed: cpu, gpu")
    for key, value in resources.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                key == "cpu" and value == 0):
            fail(path, f"resources.{key}={value!r} must be a number "
                  + ("> 0" if key == "cpu" else ">= 0"))
    run = {"max_failures": 2, "max_concurrent": 2, "num_samples": 1, **(raw.get("run") or {})}
    bad = sorted(set(run) - set(RUN_KEYS))
    if bad:
        fail(path, f"unknown run key(s) {', '.join(bad)}; allowed: {', '.join(RUN_KEYS)}")
    for key, lo in RUN_KEYS.items():
        value = run[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            fail(path, f"run.{key}={value!r} must be an integer >= {lo}")
    space_name = name or raw.get("name") or path.stem
    if not isinstance(space_name, str) or not space_name.replace("-", "").replace(
            "_", "").isalnum():
        fail(path, f"name {space_name!r} must be letters, digits, '-' or '_'")
    one_line = lambda msg: fail(path, msg)  # noqa: E731
    search = check_search(raw.get("search"), one_line)
    scheduler = check_scheduler(raw.get("scheduler"), one_line)
    if search and search["algorithm"] != "grid" and len(grids) > 1:
        fail(path, f"search.algorithm={search['algorithm']} needs one grid (its keys become "
              f"choices); united grids run with algorithm: grid")
    return dict(name=space_name, base=base, grids=grids, sample=sample, resources=resources,
                run=run, overrides=overrides, search=search, scheduler=scheduler)


def check_plugins(path, value, in_base) -> str:
    """The space's ``plugins: [...]`` (with base's ``plugins``, if any) as the trial key: paths
    made absolute relative to the space file, every module imported (so a missing one fails
    here, naming it)."""
    from zeroflow import plugins

    if not isinstance(value, (list, str)) or not all(
            isinstance(p, str) for p in (value if isinstance(value, list) else [value])):
        fail(path, "plugins must be a list of module names or paths (e.g. plugins: [my_zo])")
    specs = [plugins.absolute(p, path.parent) for p in plugins.parse(value)]
    specs += [p for p in plugins.parse(in_base) if p not in specs]
    try:
        plugins.load(specs)
    except ConfigError as err:
        fail(path, str(err))
    return ",".join(specs)


def check_rules_match(path, space) -> None:
    """Every override rule's ``when`` matches at least one grid point."""
    for i, (when, _) in enumerate(space.overrides):
        if not any(matches(when, {**space.base, **point}) for point in space.points()):
            where = ", ".join(f"{k}: {v}" for k, v in when.items())
            fail(path, f"overrides[{i}].when {{{where}}} matches no grid point; check its values")


def number(value):
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: take numeric strings as floats."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def check_sampler(path, key: str, spec) -> dict[str, list]:
    if not isinstance(spec, dict) or len(spec) != 1:
        fail(path, f"sample.{key} must be one of {{{', '.join(SAMPLERS)}: [...]}}")
    (kind, args), = spec.items()
    if kind not in SAMPLERS:
        fail(path, f"sample.{key}: unknown sampler {kind!r}; use one of {', '.join(SAMPLERS)}")
    if not isinstance(args, list) or not args:
        fail(path, f"sample.{key}.{kind} must be a list")
    if SAMPLERS[kind] is not None:
        args = [number(a) for a in args]
        if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                     for a in args):
            fail(path, f"sample.{key}.{kind} must be [low, high] numbers")
        lo, hi = args
        if not lo < hi:
            fail(path, f"sample.{key}.{kind}: low {lo} must be below high {hi}")
        if kind == "loguniform" and lo <= 0:
            fail(path, f"sample.{key}.loguniform: low {lo} must be > 0")
    return {kind: args}


def check_overrides(path, rules, grid, sample, base) -> list[tuple[dict, dict]]:
    if not isinstance(rules, list):
        fail(path, "'overrides' must be a list of {when: {...}, set: {...}}")
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or set(rule) != {"when", "set"} or not all(
                isinstance(rule[k], dict) and rule[k] for k in ("when", "set")):
            fail(path, f"overrides[{i}] must be {{when: {{key: value}}, set: {{key: value}}}}")
        bad = sorted(set(rule["when"]) - set(grid) - set(base))
        if bad:
            fail(path, f"overrides[{i}].when may only name grid keys ({', '.join(grid) or 'none'}"
                  f") or base keys ({', '.join(base) or 'none'}), not {', '.join(bad)}")
        try:
            check_keys(rule["set"], where=f"overrides[{i}].set")
        except ConfigError as err:
            fail(path, str(err))
        clash = sorted(set(rule["set"]) & (set(grid) | set(sample)))
        if clash:
            fail(path, f"overrides[{i}].set cannot set grid/sample key(s) {', '.join(clash)}")
        out.append((dict(rule["when"]), dict(rule["set"])))
    return out


def expand(path, space) -> list[TrialConfig]:
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
                fail(path, f"{err}" + (f" (at {where})" if where else ""))
    return configs
