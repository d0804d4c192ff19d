"""The sweep driver: start Ray, launch or restore a ``Tuner`` over the trainable, summarise.

MLflow is written by the driver only (``zeroflow.tracking.callback.MLflowSweepCallback``),
and a restored sweep continues its trials' runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zeroflow.config import make_config
from zeroflow.errors import ConfigError
from zeroflow.sweep.space import GRID_POINT, Space, load_space, trial_config, trial_name
from zeroflow.sweep.trainable import zeroflow_trainable

DEFAULT_STORAGE = "zeroflow_runs"
SPACE_COPY = "zeroflow_space.yaml"  # the space file, kept beside Ray's experiment state


class TrialResources:
    """``tune.with_resources`` callable: a trial's placement group is one bundle for the trial
    (the space's ``resources``) and one per query worker (``worker_cpus``/``worker_gpus``), so
    that the workers' actors are placed inside it: an actor outside its trial's group waits
    forever once trials hold every CPU. Picklable (Tune stores it with the experiment)."""

    def __init__(self, resources: dict[str, float]):
        self.resources = dict(resources)

    def __call__(self, config: dict):
        from ray import tune

        trial = make_config(trial_config(config))
        bundles = [{"CPU": self.resources["cpu"], "GPU": self.resources["gpu"]}] + [
            {"CPU": trial.worker_cpus, "GPU": trial.worker_gpus}] * trial.query_workers
        return tune.PlacementGroupFactory(
            [{k: v for k, v in b.items() if v > 0} for b in bundles], strategy="PACK")


def _storage(storage: str | os.PathLike | None) -> Path:
    return Path(storage or DEFAULT_STORAGE).expanduser().resolve()


def _frequent_experiment_state() -> None:
    """Save Tune's experiment state every 2 s (Ray's default waits >= 10 s): a driver killed
    in between would otherwise lose which trials exist and reopen them under new ids."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")


def _init_ray(address: str | None, log_to_driver: bool = True) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": log_to_driver}
    if address:
        kwargs["address"] = address
    else:
        kwargs["include_dashboard"] = False
    ray.init(**kwargs)


def run_sweep(space_path: str | os.PathLike, *, name: str | None = None,
              storage: str | os.PathLike | None = None, address: str | None = None,
              tracking_uri: str | None = None, verbose: int = 1):
    """Launch the sweep described by ``space_path``; returns (Ray's ``ResultGrid``, space)."""
    from ray import tune

    from zeroflow.tracking import default_tracking_uri
    from zeroflow.tracking.callback import MLflowSweepCallback

    space = load_space(space_path, name)
    storage_path = _storage(storage)
    if (storage_path / space.name).exists() and tune.Tuner.can_restore(
            str(storage_path / space.name)):
        raise ConfigError(
            f"a sweep named {space.name!r} already exists in {storage_path}; continue it with "
            f"'zeroflow resume {space.name}' or pick another --name")
    uri = tracking_uri or default_tracking_uri()
    _init_ray(address)
    _frequent_experiment_state()
    callback = MLflowSweepCallback(space.name, uri, space.varying,
                                   {"space": str(Path(space_path).resolve()),
                                    "grid_keys": ",".join(space.varying),
                                    "trials": space.n_trials},
                                   space.text)
    experiment = storage_path / space.name
    experiment.mkdir(parents=True, exist_ok=True)
    (experiment / SPACE_COPY).write_text(space.text)
    trainable = tune.with_resources(zeroflow_trainable, TrialResources(space.resources))
    tuner = tune.Tuner(
        trainable,
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(
            num_samples=space.num_samples,
            max_concurrent_trials=space.run["max_concurrent"],
            trial_name_creator=lambda t: trial_name(t.config, space.varying),
            trial_dirname_creator=lambda t: f"{t.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=space.name,
            storage_path=str(storage_path),
            failure_config=tune.FailureConfig(max_failures=space.run["max_failures"]),
            callbacks=[callback],
            verbose=verbose,
        ),
    )
    return tuner.fit(), space


def resume_sweep(name_or_path: str, *, storage: str | os.PathLike | None = None,
                 address: str | None = None):
    """Finish an interrupted sweep: finished trials are kept, the others continue.
    Returns (``ResultGrid``, space)."""
    from ray import tune

    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        path = _storage(storage) / name_or_path
    path = path.resolve()
    if not tune.Tuner.can_restore(str(path)):
        raise ConfigError(f"no sweep to resume at {path}; give a sweep name (with --storage "
                          f"where it lives) or its folder")
    space = saved_space(path)  # fails fast, before Ray starts
    _init_ray(address)
    _frequent_experiment_state()
    tuner = tune.Tuner.restore(str(path), trainable=tune.with_resources(
        zeroflow_trainable, TrialResources(space.resources)), resume_errored=True)
    return tuner.fit(), space


def saved_space(path: Path) -> Space:
    """The space a sweep was launched with (its copy in the experiment folder)."""
    copy = path / SPACE_COPY
    if not copy.exists():
        raise ConfigError(f"{path} has no {SPACE_COPY}; it was not launched by zeroflow sweep")
    return load_space(copy, name=path.name)


def summary_table(results, varying: list[str] | None = None):
    """The sweep's final table: the varying keys, then avg / last / forgetting per trial."""
    df = results.get_dataframe()
    cols = {}
    for key in varying or []:
        for column in (f"config/{key}", f"config/{GRID_POINT}/{key}"):
            if column in df:
                cols[key] = df[column]
    for src, dst in (("avg_accuracy", "avg"), ("accuracy", "last"), ("forgetting", "forgetting"),
                     ("forward_passes", "forward_passes"), ("peak_memory_mb", "peak_mb")):
        if src in df:
            cols[dst] = df[src]
    import pandas as pd

    table = pd.DataFrame(cols)
    if "avg" in table:
        table = table.sort_values("avg", ascending=False)
    return table.reset_index(drop=True)
