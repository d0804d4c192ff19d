"""The sweep driver: start Ray, launch or restore a ``Tuner`` over the trainable, summarise.

MLflow is written by the driver only (``zeroflow.sweep.mlflow_callback.MLflowSweepCallback``),
and a restored sweep continues its trials' runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from zeroflow.config import make_config
from zeroflow.errors import ConfigError
from zeroflow.sweep import own_state, search
from zeroflow.sweep import storage as storage_mod
from zeroflow.sweep.plan import resolve_space
from zeroflow.sweep.resolve import TrialNamer, trial_dirname
from zeroflow.sweep.space import Space, load_space, trial_config
from zeroflow.sweep.trainable import zeroflow_trainable

DEFAULT_STORAGE = storage_mod.DEFAULT_STORAGE
SPACE_COPY = "zeroflow_space.yaml"  # the space file, kept beside Ray's experiment state
SWEEP_INFO = "zeroflow_sweep.json"  # what the launch chose: its MLflow store (plain JSON)


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


def state_period(n_trials: int) -> float:
    """Seconds between saves of Tune's experiment state: 2 up to 100 trials, then 2 more per
    100 trials (20 at 1,000). A save writes every trial's state, so its cost grows with the
    sweep (~0.15 s at 200 trials, ~0.64 s at 500 on 2 loaded cores: docs/measurements.md,
    "Sweep bookkeeping at scale"); a period growing alike keeps the saves' cost near 0.1 s
    per trial (measured up to 500 trials) instead of ~0.5 s and growing with 2 s."""
    return max(2.0, n_trials / 50)


def _frequent_experiment_state(n_trials: int) -> None:
    """Save Tune's experiment state often (``state_period``; Ray's default waits >= 10 s): a
    driver killed in between loses which trials started since, and a resume runs them again
    under new ids (their first runs end KILLED, tagged ``zeroflow.abandoned``). A value set
    in ``TUNE_GLOBAL_CHECKPOINT_S`` (other than by an earlier sweep of this process) wins."""
    current = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")
    if current is None or current == _PERIOD_SET.get("value"):
        _PERIOD_SET["value"] = os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = (
            f"{state_period(n_trials):g}")


_PERIOD_SET: dict[str, str] = {}  # the period this process set last (not the user's)


def _init_ray(address: str | None, log_to_driver: bool = True) -> bool:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``, which ``ray job submit`` sets for
    its driver), else start Ray on this machine. Returns whether it joined a cluster. The
    plugins the space loaded travel to every worker (``zeroflow.plugins.runtime_env``)."""
    import ray

    from zeroflow import plugins

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return bool(address)
    kwargs: dict[str, Any] = {"log_to_driver": log_to_driver}
    if not log_to_driver:  # quiet: no "Started a local Ray instance", no Optuna study lines
        kwargs["logging_level"] = logging.WARNING
        logging.getLogger("optuna").setLevel(logging.WARNING)
    if address:
        kwargs["address"] = address
    else:
        kwargs["include_dashboard"] = False
    if plugins.runtime_env():
        kwargs["runtime_env"] = plugins.runtime_env()
    ray.init(**kwargs)
    return bool(address)


def _say(message: str) -> None:
    print(f"zeroflow: {message}", file=sys.stderr, flush=True)


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
              tracking_uri: str | None = None, verbose: int = 1, progress: bool = False,
              callbacks: list | None = None):
    """Launch the sweep described by ``space_path``; returns (Ray's ``ResultGrid``, space).

    ``verbose``: Ray Tune's own output (0 silent, 1 result boxes, 2 more), and trial workers'
    logs forwarded when > 0. ``progress``: print ``ProgressLine``'s status lines.
    ``callbacks``: more Ray Tune callbacks, called before the sweep's own."""
    from ray import tune

    from zeroflow.sweep.mlflow_callback import MLflowSweepCallback
    from zeroflow.tracking import default_tracking_uri

    space_path = resolve_space(space_path)
    space = load_space(space_path, name)
    storage_path = _storage(storage)
    experiment = storage_mod.join(storage_path, space.name)
    if tune.Tuner.can_restore(experiment):
        raise ConfigError(
            f"a sweep named {space.name!r} already exists in {storage_path}; continue it with "
            f"'zeroflow resume {space.name}' or pick another --name")
    uri = tracking_uri or default_tracking_uri()
    if progress:
        _say(f"sweep {space.name}: {space.n_trials} trials"
             + ("" if space.searched else f", {space.run['max_concurrent']} at a time")
             + "; starting Ray")
    if verbose == 0:  # Tune's legacy reporter prints nothing at 0 (the new one, a header box)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # nor "callbacks.on_trial_result took 1.3 s" (the driver's MLflow callback)
        logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
    _warn_cluster(storage, _init_ray(address, log_to_driver=verbose > 0), uri)
    _frequent_experiment_state(space.n_trials)
    callback = MLflowSweepCallback(space.name, uri, space.varying,
                                   {"space": str(Path(space_path).resolve()),
                                    "grid_keys": ",".join(space.varying),
                                    "trials": space.n_trials},
                                   space.text, stopper=space.scheduler and search.describe(
                                       space.scheduler))
    storage_mod.make_private_dir(experiment)
    storage_mod.write_text(storage_mod.join(experiment, SPACE_COPY),
                           _portable_text(space.text, Path(space_path).parent))
    storage_mod.write_text(storage_mod.join(experiment, SWEEP_INFO),
                           json.dumps({"tracking_uri": uri}))
    trainable = tune.with_resources(zeroflow_trainable, TrialResources(space.resources))
    tuner = tune.Tuner(
        trainable,
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(
            num_samples=space.num_samples,
            max_concurrent_trials=None if space.searched else space.run["max_concurrent"],
            search_alg=search.search_algorithm(space.search, space.run["max_concurrent"]),
            scheduler=search.trial_scheduler(space.scheduler),
            **dict(zip(("metric", "mode"), search.objective(space.search, space.scheduler)
                       or ())),
            trial_name_creator=TrialNamer(space.varying),
            trial_dirname_creator=trial_dirname,
            # a finished trial's worker process runs the next one: torch and timm are imported
            # once per worker, not once per trial (~5 s each on the quickstart's cores)
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=space.name,
            storage_path=storage_path,
            failure_config=tune.FailureConfig(max_failures=space.run["max_failures"]),
            callbacks=list(callbacks or []) + [callback] + _progress(space, progress),
            verbose=verbose,
        ),
    )
    return tuner.fit(), space


def _progress(space: Space, on: bool) -> list:
    if not on:
        return []
    from zeroflow.sweep.progress import ProgressLine

    metric, mode = search.objective(space.search, space.scheduler) or ("avg_accuracy", "max")
    return [ProgressLine(space.n_trials, space.varying, metric, mode)]


def sweep_path(name_or_path: str, storage: str | os.PathLike | None = None) -> str:
    """A sweep's folder: ``name_or_path`` itself when it is a folder or URI, else the sweep of
    that name in ``storage``."""
    if storage_mod.is_uri(name_or_path) or Path(name_or_path).expanduser().is_dir():
        return storage_mod.resolve(name_or_path)
    return storage_mod.join(_storage(storage), name_or_path)


def tracking_uri_of(path: str) -> str:
    """Where a resume of the sweep at ``path`` logs: ``$MLFLOW_TRACKING_URI`` when set, else the
    store the sweep was launched with (``SWEEP_INFO``), else the default store."""
    from zeroflow.tracking import default_tracking_uri

    return os.environ.get("MLFLOW_TRACKING_URI") or _launch_info(path).get(
        "tracking_uri") or default_tracking_uri()


def _launch_info(path: str) -> dict:
    text = storage_mod.read_text(storage_mod.join(path, SWEEP_INFO))
    try:
        info = json.loads(text) if text else {}
    except ValueError:
        info = {}
    return info if isinstance(info, dict) else {}


def resume_sweep(name_or_path: str, *, storage: str | os.PathLike | None = None,
                 address: str | None = None, verbose: int = 1):
    """Finish an interrupted sweep: finished trials are kept, the others continue from their
    newest checkpoint. Ray restores the launch's callbacks (tracking, progress lines), searcher
    and scheduler with it; ``verbose`` > 0 forwards trial workers' logs. Returns
    (``ResultGrid``, space).

    Tune's state is pickled, so the folder is checked first: writable by its owner only
    (``storage.check_trusted``). The space is given back to Ray (``param_space``): its override
    rules are functions, which Ray cannot restore by itself."""
    from ray import tune

    path = sweep_path(name_or_path, storage)
    if not tune.Tuner.can_restore(path):
        raise ConfigError(f"no sweep to resume at {path}; give a sweep name (with --storage "
                          f"where it lives) or its folder")
    storage_mod.check_trusted(path)  # before anything in it is unpickled
    space = saved_space(path)  # fails fast, before Ray starts
    _say(f"resuming sweep {space.name} ({path}); starting Ray")
    uri = tracking_uri_of(path)
    launched = _launch_info(path).get("tracking_uri")
    if launched and launched != uri:
        print(f"zeroflow: this resume logs to {uri} (MLFLOW_TRACKING_URI); the sweep was "
              f"launched with {launched}", file=sys.stderr, flush=True)
    _warn_cluster(path, _init_ray(address, log_to_driver=verbose > 0), uri)
    _frequent_experiment_state(space.n_trials)
    own_state.clear_staged_state(path)  # a copy or a moved folder: its own state only
    own_state.rebase_searcher_state(path)
    tuner = tune.Tuner.restore(path, trainable=tune.with_resources(
        zeroflow_trainable, TrialResources(space.resources)), param_space=space.param_space(),
        resume_errored=True)
    return tuner.fit(), space


def _portable_text(text: str, folder: Path) -> str:
    """The space file's text as kept beside the sweep: with plugin paths relative to the space
    file made absolute (``zeroflow resume`` reads the copy from another folder); the text as
    written otherwise."""
    import yaml

    from zeroflow import plugins

    raw = yaml.safe_load(text)
    specs = plugins.parse(raw.get("plugins")) if isinstance(raw, dict) else ()
    fixed = [plugins.absolute(spec, folder) for spec in specs]
    if list(specs) == fixed:
        return text
    return yaml.safe_dump({**raw, "plugins": fixed}, sort_keys=False)


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
