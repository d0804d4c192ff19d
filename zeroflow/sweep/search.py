"""A space file's ``search:`` and ``scheduler:`` sections → Ray Tune's search algorithm and trial
scheduler.

    search: {algorithm: optuna, metric: avg_accuracy, mode: max, seed: 0}
    scheduler: {type: asha, grace_period: 1, reduction_factor: 2}   # or {type: median_stopping}

``grid`` (the default) runs every grid point, ``num_samples`` times; ``random`` and ``optuna``
run ``run.num_samples`` trials in all, each drawing the grid keys as categorical choices and the
``sample`` keys from their distributions (Optuna's TPE learns from the results reported so far).
Schedulers count time in tasks: every trial reports once per task, so ``grace_period: 1`` lets
every trial finish its first task before it may be stopped. Everything is validated with the
rest of the file; a bad section is a one-line ``ConfigError``.
"""

from __future__ import annotations

from typing import Any

ALGORITHMS = ("grid", "random", "optuna")
SCHEDULERS = ("asha", "median_stopping")
# metrics every trial reports after each task, and which way is better
METRICS = {"avg_accuracy": "max", "accuracy": "max", "forgetting": "min"}
SEARCH_KEYS = {"algorithm": "grid", "metric": "avg_accuracy", "mode": None, "seed": 0}
SCHEDULER_KEYS = {
    "asha": {"grace_period": 1, "reduction_factor": 2, "max_t": 100},
    "median_stopping": {"grace_period": 1, "min_samples_required": 3},
}


def check_search(raw: Any, fail) -> dict[str, Any] | None:
    """The validated ``search`` section (defaults filled in), or None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        fail("'search' must be a mapping: {algorithm: optuna|random|grid, metric, mode, seed}")
    bad = sorted(set(raw) - set(SEARCH_KEYS))
    if bad:
        fail(f"unknown search key(s) {', '.join(bad)}; allowed: {', '.join(SEARCH_KEYS)}")
    out = {**SEARCH_KEYS, **raw}
    if out["algorithm"] not in ALGORITHMS:
        fail(f"search.algorithm={out['algorithm']!r} is not one of {', '.join(ALGORITHMS)}")
    if out["metric"] not in METRICS:
        fail(f"search.metric={out['metric']!r} is not one of {', '.join(METRICS)} "
             f"(what every trial reports after each task)")
    out["mode"] = out["mode"] or METRICS[out["metric"]]
    if out["mode"] not in ("max", "min"):
        fail(f"search.mode={out['mode']!r} must be max or min")
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], int):
        fail(f"search.seed={out['seed']!r} must be an integer")
    if out["algorithm"] == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            fail("search.algorithm=optuna needs Optuna: pip install -e '.[search]'")
    return out


def check_scheduler(raw: Any, fail) -> dict[str, Any] | None:
    """The validated ``scheduler`` section (defaults filled in), or None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") not in SCHEDULERS:
        fail(f"'scheduler' must be a mapping with type one of {', '.join(SCHEDULERS)}, "
             f"e.g. {{type: asha, grace_period: 1, reduction_factor: 2}}")
    allowed = SCHEDULER_KEYS[raw["type"]]
    bad = sorted(set(raw) - set(allowed) - {"type"})
    if bad:
        fail(f"unknown scheduler key(s) {', '.join(bad)} for {raw['type']}; allowed: "
             f"{', '.join(allowed)}")
    out = {**allowed, **raw}
    for key, lo in (("grace_period", 1), ("reduction_factor", 2), ("max_t", 1),
                    ("min_samples_required", 1)):
        if key in out and (isinstance(out[key], bool) or not isinstance(out[key], int)
                           or out[key] < lo):
            fail(f"scheduler.{key}={out[key]!r} must be an integer >= {lo} "
                 f"({'tasks' if key in ('grace_period', 'max_t') else 'a count'})")
    if "max_t" in out and out["max_t"] < out["grace_period"]:
        fail(f"scheduler.max_t={out['max_t']} must be >= grace_period={out['grace_period']}")
    return out


def objective(search: dict | None, scheduler: dict | None) -> tuple[str, str] | None:
    """The (metric, mode) Tune optimises, when a searcher or scheduler needs one."""
    if search is None and scheduler is None:
        return None
    search = search or SEARCH_KEYS
    metric = search["metric"]
    return metric, search.get("mode") or METRICS[metric]


def search_algorithm(search: dict | None, max_concurrent: int):
    """Ray's searcher for the section (None: Tune's default grid/random variant generator)."""
    if search is None or search["algorithm"] == "grid":
        return None
    from ray import tune

    if search["algorithm"] == "random":
        return tune.search.BasicVariantGenerator(random_state=search["seed"],
                                                 max_concurrent=max_concurrent)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=search["seed"]))
    return tune.search.ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)


def trial_scheduler(scheduler: dict | None):
    """Ray's scheduler; its time unit is the task (``training_iteration`` = tasks reported)."""
    if scheduler is None:
        return None
    from ray import tune

    if scheduler["type"] == "asha":
        return tune.schedulers.ASHAScheduler(
            time_attr="training_iteration", grace_period=scheduler["grace_period"],
            reduction_factor=scheduler["reduction_factor"], max_t=scheduler["max_t"])
    return tune.schedulers.MedianStoppingRule(
        time_attr="training_iteration", grace_period=scheduler["grace_period"],
        min_samples_required=scheduler["min_samples_required"])


def describe(scheduler: dict | None) -> str:
    """Who stops trials early, for the MLflow tag of a stopped trial."""
    if scheduler is None:
        return "a scheduler"
    if scheduler["type"] == "asha":
        return (f"ASHA (grace_period {scheduler['grace_period']} tasks, reduction_factor "
                f"{scheduler['reduction_factor']})")
    return f"the median stopping rule (grace_period {scheduler['grace_period']} tasks)"
