"""The sweep driver: start Ray, launch or restore a ``Tuner`` over the trainable, summarise.

MLflow is written by the driver only (``zeroflow.tracking.callback.MLflowSweepCallback``),
and a restored sweep continues its trials' runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from zeroflow.config import make_config
from zeroflow.errors import ConfigError
from zeroflow.sweep import storage as storage_mod
from zeroflow.sweep.space import GRID_POINT, Space, load_space, trial_config, trial_name
from zeroflow.sweep.trainable import zeroflow_trainable

DEFAULT_STORAGE = storage_mod.DEFAULT_STORAGE
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


def _storage(storage: str | os.PathLike | None) -> str:
    return storage_mod.resolve(storage)


def _frequent_experiment_state() -> None:
    """Save Tune's experiment state every 2 s (Ray's default waits >= 10 s): a driver killed
    in between would otherwise lose which trials exist and reopen them under new ids."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")


def _init_ray(address: str | None, log_to_driver: bool = True) -> bool:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``, which ``ray job submit`` sets for
    its driver), else start Ray on this machine. Returns whether it joined a cluster."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return bool(address)
    kwargs: dict[str, Any] = {"log_to_driver": log_to_driver}
    if address:
        kwargs["address"] = address
    else:
        kwargs["include_dashboard"] = False
    ray.init(**kwargs)
    return bool(address)


def _live_hosts() -> int:
    import ray

    return len({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")})


def _warn_cluster(storage, on_cluster: bool, tracking_uri: str) -> None:
    """Print, one line each, what would make checkpoints or runs unreachable on this cluster."""
    for line in storage_mod.cluster_warnings(
            storage, on_cluster=on_cluster, hosts=_live_hosts(), tracking_uri=tracking_uri,
            tracking_from_env=bool(os.environ.get("MLFLOW_TRACKING_URI"))):
        print(f"zeroflow: warning: {line}", file=sys.stderr, flush=True)


def run_sweep(space_path: str | os.PathLike, *, name: str | None = None,
              storage: str | os.PathLike | None = None, address: str | None = None,
              tracking_uri: str | None = None, verbose: int = 1):
    """Launch the sweep described by ``space_path``; returns (Ray's ``ResultGrid``, space)."""
    from ray import tune

    from zeroflow.tracking import default_tracking_uri
    from zeroflow.tracking.callback import MLflowSweepCallback

    space = load_space(space_path, name)
    storage_path = _storage(storage)
    experiment = storage_mod.join(storage_path, space.name)
    if tune.Tuner.can_restore(experiment):
        raise ConfigError(
            f"a sweep named {space.name!r} already exists in {storage_path}; continue it with "
            f"'zeroflow resume {space.name}' or pick another --name")
    uri = tracking_uri or default_tracking_uri()
    _warn_cluster(storage, _init_ray(address), uri)
    _frequent_experiment_state()
    callback = MLflowSweepCallback(space.name, uri, space.varying,
                                   {"space": str(Path(space_path).resolve()),
                                    "grid_keys": ",".join(space.varying),
                                    "trials": space.n_trials},
                                   space.text)
    storage_mod.write_text(storage_mod.join(experiment, SPACE_COPY), space.text)
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
            storage_path=storage_path,
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

    if storage_mod.is_uri(name_or_path) or Path(name_or_path).expanduser().is_dir():
        path = storage_mod.resolve(name_or_path)
    else:
        path = storage_mod.join(_storage(storage), name_or_path)
    if not tune.Tuner.can_restore(path):
        raise ConfigError(f"no sweep to resume at {path}; give a sweep name (with --storage "
                          f"where it lives) or its folder")
    space = saved_space(path)  # fails fast, before Ray starts
    from zeroflow.tracking import default_tracking_uri

    _warn_cluster(path, _init_ray(address), default_tracking_uri())
    _frequent_experiment_state()
    tuner = tune.Tuner.restore(path, trainable=tune.with_resources(
        zeroflow_trainable, TrialResources(space.resources)), resume_errored=True)
    return tuner.fit(), space


def saved_space(path: str | os.PathLike) -> Space:
    """The space a sweep was launched with (its copy in the experiment folder)."""
    path = str(path)
    copy = storage_mod.join(path, SPACE_COPY)
    text = storage_mod.read_text(copy)
    if text is None:
        raise ConfigError(f"{path} has no {SPACE_COPY}; it was not launched by zeroflow sweep")
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if not storage_mod.is_uri(copy):
        return load_space(copy, name=name)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # a local copy for the file-based loader
        local = Path(tmp) / SPACE_COPY
        local.write_text(text)
        return load_space(local, name=name)


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
