"""A ``tune_spaces`` file → a Ray Tune sweep over ``run_trial``, tracked in MLflow; and resume.

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

``run.num_samples`` doubles as seeds: without a ``sample`` section (and no ``seed`` in the grid)
every grid point runs with seeds base.seed, base.seed + 1, ...; with one, Ray draws
``num_samples`` configurations per grid point.

Each trial reports after every task with a checkpoint (``tune.report(..., checkpoint=...)``), so
a retried trial restarts from its last finished task. MLflow is written by the driver only
(``MLflowSweepCallback``), and a restored sweep continues its trials' runs.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zeroflow.config import TrialConfig, check_keys, make_config
from zeroflow.errors import ConfigError

SPACE_KEYS = ("name", "description", "base", "grid", "sample", "overrides", "resources", "run")
RUN_KEYS = {"max_failures": 0, "max_concurrent": 1, "num_samples": 1}
RESOURCE_KEYS = ("cpu", "gpu")
logger = logging.getLogger(__name__)
GRID_POINT = "grid_point"  # param-space key holding a point of united grids
SAMPLERS = {"loguniform": 2, "uniform": 2, "randint": 2, "choice": None}
DEFAULT_STORAGE = "zeroflow_runs"
SPACE_COPY = "zeroflow_space.yaml"  # the space file, kept beside Ray's experiment state
FAULT_ENV = "ZEROFLOW_INJECT_FAULT"  # test hook: a file holding "raise|kill:<task>:<marker>"


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

    @property
    def grid_keys(self) -> list[str]:
        return list(dict.fromkeys(k for grid in self.grids for k in grid))

    @property
    def seeds_from_samples(self) -> bool:
        return not self.sample and "seed" not in self.grid_keys

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
        for key, spec in self.sample.items():
            (kind, args), = spec.items()
            space[key] = {"loguniform": tune.loguniform, "uniform": tune.uniform,
                          "randint": tune.randint}[kind](*args) if kind != "choice" else (
                tune.choice(list(args)))
        for key in {k for _, settings in self.overrides for k in settings}:
            default = self.base.get(key, TrialConfig.__dataclass_fields__[key].default)
            space[key] = tune.sample_from(_OverrideValue(key, self.overrides, default))
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
        return len(self.points()) * self.run["num_samples"]

    @property
    def varying(self) -> list[str]:
        keys = self.grid_keys + list(self.sample)
        if self.seeds_from_samples and self.run["num_samples"] > 1:
            keys.append("seed")
        return keys


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """A Ray trial config as trial keys (the united grids' point merged in)."""
    out = dict(config)
    out.update(out.pop(GRID_POINT, None) or {})
    return out


def _matches(when: dict[str, Any], point: dict[str, Any]) -> bool:
    point = trial_config(point)
    return all(point.get(k) in (v if isinstance(v, list) else [v]) for k, v in when.items())


class _OverrideValue:
    """``tune.sample_from`` function: a key's value for a resolved grid point (picklable)."""

    def __init__(self, key: str, rules: list[tuple[dict, dict]], default: Any):
        self.key, self.rules, self.default = key, rules, default

    def __call__(self, spec) -> Any:
        config = spec.config if hasattr(spec, "config") else spec["config"]
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
    overrides = _check_overrides(path, raw.get("overrides") or [], grid, sample)
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
    space = Space(space_name, base, grids, sample, resources, run, overrides, text)
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


def _check_overrides(path, rules, grid, sample) -> list[tuple[dict, dict]]:
    if not isinstance(rules, list):
        _fail(path, "'overrides' must be a list of {when: {...}, set: {...}}")
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or set(rule) != {"when", "set"} or not all(
                isinstance(rule[k], dict) and rule[k] for k in ("when", "set")):
            _fail(path, f"overrides[{i}] must be {{when: {{key: value}}, set: {{key: value}}}}")
        bad = sorted(set(rule["when"]) - set(grid))
        if bad:
            _fail(path, f"overrides[{i}].when may only name grid keys ({', '.join(grid) or 'none'}"
                  f"), not {', '.join(bad)}")
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


# ---------------------------------------------------------------------------------- trainable
def _maybe_inject_fault(task: int) -> None:
    """Test hook: die once (raise or SIGKILL) at the start of task ``task``'s second epoch,
    as the file named by ``$ZEROFLOW_INJECT_FAULT`` says; the marker file makes it once."""
    spec_file = os.environ.get(FAULT_ENV)
    spec = Path(spec_file).read_text().strip() if spec_file and os.path.exists(spec_file) else ""
    if not spec:
        return
    kind, at, marker = spec.split(":", 2)
    if int(at) != task or os.path.exists(marker):
        return
    Path(marker).write_text(kind)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected fault in task {task}")


def zeroflow_trainable(config: dict) -> None:
    """Ray Tune function trainable: ``run_trial`` with a checkpoint reported after each task."""
    from ray import tune

    from zeroflow.trial import CHECKPOINT_FILE, run_trial

    resume_from = None
    restored = tune.get_checkpoint()
    if restored is not None:
        resume_from = restored.to_directory(tempfile.mkdtemp(prefix="zf_restore_"))
    workdir = tempfile.mkdtemp(prefix="zf_trial_")

    def report(rep) -> None:
        snapshot = tempfile.mkdtemp(prefix="zf_ckpt_")
        try:
            shutil.copy(Path(rep.checkpoint_dir) / CHECKPOINT_FILE, snapshot)
            tune.report({**rep.metrics, "task": rep.task, "n_tasks": rep.n_tasks,
                         "start_task": rep.start_task, "memory_label": rep.memory_label},
                        checkpoint=tune.Checkpoint.from_directory(snapshot))
        finally:  # tune.report has persisted the checkpoint by the time it returns
            shutil.rmtree(snapshot, ignore_errors=True)

    def on_epoch(task: int, epoch: int) -> None:
        if epoch == 1:
            _maybe_inject_fault(task)

    try:
        run_trial(trial_config(config), report, checkpoint_dir=workdir, resume_from=resume_from,
                  on_epoch=on_epoch)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if resume_from is not None:
            shutil.rmtree(resume_from, ignore_errors=True)


# ---------------------------------------------------------------------------------- tracking
def trial_name(config: dict[str, Any], varying: list[str]) -> str:
    config = trial_config(config)
    varying = [k for k in varying if k in config]
    parts = [f"{k}={config[k]:.3g}" if isinstance(config.get(k), float) else f"{k}={config.get(k)}"
             for k in varying]
    return ",".join(parts) or "trial"


def _tune_callback_base():
    from ray import tune

    return tune.Callback


class MLflowSweepCallback(_tune_callback_base()):
    """Driver-side MLflow logging that survives a sweep restore.

    Ray's ``MLflowLoggerCallback`` keeps its run ids in memory and opens new runs after a
    restore; this one finds each trial's run again by its ``zeroflow.trial_id`` tag (within the
    launch's ``sweep_id``), skips tasks already logged, and at the end reconciles runs of trials
    that finished while no driver was watching. A tracking error is logged as a warning and
    never stops the sweep (the reconciliation catches up). Picklable (Ray stores it with the
    experiment): the MLflow client is made lazily.
    """

    def __init__(self, sweep: str, tracking_uri: str, varying: list[str], space: dict,
                 space_text: str = "", sweep_id: str | None = None):
        self.sweep, self.uri, self.varying = sweep, tracking_uri, varying
        self.space, self.space_text = space, space_text
        self.sweep_id = sweep_id or uuid.uuid4().hex
        self._tracker = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tracker"] = None
        return state

    @property
    def tracker(self):
        if self._tracker is None:
            from zeroflow.tracking import SweepTracker

            self._tracker = SweepTracker(self.sweep, self.uri, self.sweep_id)
            self._tracker.log_sweep_params(self.space, self.space_text)
        return self._tracker

    def _run(self, trial, reopen: bool = False) -> str:
        return self.tracker.trial_run(trial.trial_id, trial_name(trial.config, self.varying),
                                      make_config(trial_config(trial.config)).to_dict(),
                                      reopen=reopen)

    def _guard(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as err:  # noqa: BLE001 - tracking must not end the sweep
            logger.warning("zeroflow: MLflow %s failed (%s); the sweep goes on", what, err)

    def setup(self, **info):
        self._guard("setup", lambda: self.tracker)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._guard("trial start", self._run, trial, True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._guard("result", self._log, trial, result)

    def _log(self, trial, result) -> None:
        from zeroflow.tracking import task_metrics

        if "task" in result:
            self.tracker.log_task(self._run(trial), int(result["task"]), task_metrics(result),
                                  result.get("memory_label"))

    def _finish(self, trial, status: str) -> None:
        config = make_config(trial_config(trial.config))
        n_tasks = int((trial.last_result or {}).get("n_tasks", 0))
        self.tracker.finish_trial(self._run(trial), config.to_dict(), n_tasks,
                                  f"{self.sweep}: {trial_name(trial.config, self.varying)}",
                                  status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._guard("trial end", self._finish, trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._guard("trial error", self._finish, trial, "FAILED")

    def on_experiment_end(self, trials, **info):
        self._guard("reconciliation", self._reconcile, trials)

    def _reconcile(self, trials) -> None:
        """Trials that finished while no driver logged (a killed driver) get their missing
        tasks, final metrics and status now; trials stopped part-way (Ctrl-C) are KILLED, not
        FINISHED; then the sweep's run ends accordingly."""
        statuses = []
        for trial in trials:
            last = trial.last_result or {}
            complete = trial.status == "TERMINATED" and "n_tasks" in last and int(
                last.get("task", -1)) == int(last["n_tasks"]) - 1
            status = "FAILED" if trial.status == "ERROR" else (
                "FINISHED" if complete else "KILLED")
            statuses.append(status)
            run_id = self._run(trial)
            if self.tracker.run_status(run_id) != "RUNNING":
                continue
            if status == "KILLED":
                self.tracker.client.set_terminated(run_id, status="KILLED")
                continue
            for result in _checkpoint_results(trial):
                self._log(trial, result)
            self._finish(trial, status)
        overall = ("FAILED" if "FAILED" in statuses else
                   "KILLED" if "KILLED" in statuses else "FINISHED")
        self.tracker.finish_sweep(overall)


def _checkpoint_results(trial) -> list[dict]:
    """Every task's reported metrics, from the trial's latest checkpoint (its full history)."""
    from zeroflow.trial import CHECKPOINT_FILE, load_checkpoint

    checkpoint = getattr(trial, "checkpoint", None)
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as directory:
        if not (Path(directory) / CHECKPOINT_FILE).exists():
            return []
        payload = load_checkpoint(directory)
    return [{**metrics, "task": t} for t, metrics in enumerate(payload["history"])]


# ---------------------------------------------------------------------------------- driver
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
    trainable = tune.with_resources(zeroflow_trainable, dict(space.resources))
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
        zeroflow_trainable, dict(space.resources)), resume_errored=True)
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
