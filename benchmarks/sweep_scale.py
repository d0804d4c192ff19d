"""The sweep driver's bookkeeping at scale: many short trials through the real driver.

    python benchmarks/sweep_scale.py --trials 100 1000        # the issue's two sizes
    python benchmarks/sweep_scale.py --quick                   # 50 and 200 trials, a few minutes

Each size is one sweep launched by ``zeroflow.sweep.run_sweep`` (the ``zeroflow sweep`` path:
its MLflow Tune callback and status lines) against one MLflow server on PostgreSQL with basic
authentication (``cluster/mlflow-server.sh up``, started and stopped here in a temporary
folder). The trials do not train: a Ray ``worker_process_setup_hook`` replaces ``run_trial`` in
every trial process by one that, for each of 10 tasks, sleeps ``--sleep`` seconds, writes a small
checkpoint file and reports plausible metrics (accuracy per task, forgetting, memory, forward
passes, times). Everything the driver does with a report is real: Tune's result and checkpoint
handling, its experiment-state saves, the MLflow callback, the status lines.

Printed per size: wall time against the trials' own sleeping (trials x tasks x sleep over the
concurrency); the driver process's CPU time (``resource.getrusage``: Tune's loop, callbacks,
experiment-state saves, MLflow client) per trial and per report; the wall time spent inside the
MLflow callback, the status-line callback and Tune's experiment-state saves (each per trial);
the MLflow server's CPU (its processes and PostgreSQL's); then the growth of each per-trial
figure from the smallest to the largest size. It checks that every trial has exactly one
FINISHED MLflow run holding the 10 tasks' metrics, and times ``zeroflow report`` over the runs.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_TASKS = 10
SLEEP_ENV = "ZEROFLOW_BENCH_TASK_SLEEP"
OPTIMIZERS = ["fo-sgd", "zo-sgd", "zo-adam", "zo-sgd-conserve", "forward-grad"]


def _install_sleeper() -> None:
    """Ray's worker_process_setup_hook: ``run_trial`` in this process sleeps and reports."""
    import random

    import zeroflow.trial
    from zeroflow.checkpoint import CHECKPOINT_FILE
    from zeroflow.trial import TaskReport

    def run_trial(config, reporter=None, *, checkpoint_dir=None, resume_from=None, **_):
        pause = float(os.environ.get(SLEEP_ENV, "0.05"))
        rng = random.Random(f"{config.get('optimizer')}:{config.get('seed')}")
        accs, spent = [], 0.0
        for task in range(N_TASKS):
            began = time.perf_counter()
            time.sleep(pause)
            accs.append([max(0.0, min(100.0, 95 - 3 * (task - j) + rng.gauss(0, 2)))
                         for j in range(task + 1)])
            row = accs[-1]
            spent += time.perf_counter() - began
            metrics = {"accuracy": sum(row) / len(row),
                       "avg_accuracy": sum(sum(r) / len(r) for r in accs) / len(accs),
                       "forgetting": (sum(max(accs[k][j] for k in range(j, task)) - row[j]
                                          for j in range(task)) / task) if task else 0.0,
                       "peak_memory_mb": 900 + rng.random() * 50,
                       "train_memory_mb": 40 + rng.random() * 5,
                       "forward_passes": 200.0 * (task + 1), "forward_passes_task": 200.0,
                       "steps": 100.0 * (task + 1), "time_task_s": pause,
                       "train_time_task_s": pause * 0.9, "time_per_step_s": pause / 100,
                       **{f"accuracy_task_{j}": a for j, a in enumerate(row)}}
            Path(checkpoint_dir, CHECKPOINT_FILE).write_bytes(os.urandom(256))
            reporter(TaskReport(task, N_TASKS, metrics, checkpoint_dir))

    zeroflow.trial.run_trial = run_trial


def _space(folder: Path, name: str, trials: int, concurrent: int) -> Path:
    import yaml

    seeds = -(-trials // len(OPTIMIZERS))
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name,
        "base": {"dataset": "digits", "backbone": "tiny", "method": "ease", "init_cls": 1,
                 "increment": 1, "epochs": 1},
        "grid": [{"optimizer": OPTIMIZERS, "seed": list(range(seeds))}],
        "resources": {"cpu": 1, "gpu": 0},
        "run": {"max_failures": 0, "max_concurrent": concurrent},
    }, sort_keys=False))
    return path


class Clock:
    """Wall time spent inside wrapped functions, by label."""

    def __init__(self):
        self.spent: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner, attr: str, label: str) -> None:
        real = getattr(owner, attr)

        @functools.wraps(real)
        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.perf_counter() - began
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(owner, attr, timed)

    def reset(self):
        self.spent.clear()
        self.calls.clear()


def _instrument(clock: Clock) -> None:
    from ray.tune.execution.tune_controller import TuneController

    from zeroflow.sweep.mlflow_callback import MLflowSweepCallback
    from zeroflow.sweep.progress import ProgressLine

    for hook in ("setup", "on_step_begin", "on_trial_start", "on_trial_result",
                 "on_trial_complete", "on_experiment_end"):
        clock.wrap(MLflowSweepCallback, hook, "mlflow" if hook != "on_trial_result"
                   else "mlflow_result")
    for hook in ("on_trial_start", "on_trial_result", "on_trial_complete", "on_step_end",
                 "on_experiment_end"):
        clock.wrap(ProgressLine, hook, "progress")
    clock.wrap(TuneController, "save_to_dir", "state_save")


def _ticks(pids) -> float:
    """CPU seconds of ``pids`` (and their reaped children) from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def _server_pids(state: Path) -> list[int]:
    pids = []
    sid_file = state / "mlflow.sid"
    if sid_file.exists():
        sid = sid_file.read_text().strip()
        out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
        pids += [int(p) for p, s in (line.split() for line in out.splitlines()) if s == sid]
    pg = state / "pgdata" / "postmaster.pid"
    if pg.exists():
        master = pg.read_text().split()[0]
        out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
        pids += [int(master)] + [int(p) for p, pp in (line.split() for line in out.splitlines())
                                  if pp == master]
    return pids


def _server_up(state: Path) -> dict[str, str]:
    env = {**os.environ, "ZEROFLOW_MLFLOW_DIR": str(state), "PYTHON": sys.executable,
           "ZEROFLOW_MLFLOW_BIN": str(Path(sys.executable).parent / "mlflow"),
           "ZEROFLOW_PG_PORT": os.environ.get("ZEROFLOW_PG_PORT", "55433"),
           "ZEROFLOW_MLFLOW_PORT": os.environ.get("ZEROFLOW_MLFLOW_PORT", "55000")}
    done = subprocess.run([str(ROOT / "cluster/mlflow-server.sh"), "up"], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"cluster/mlflow-server.sh up failed:\n{done.stderr}")
    out = done.stdout
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines()
                   if line.startswith("export "))
    return {**exports, "_env": env}


def _check_runs(uri: str, experiment: str, trials: int) -> str:
    """Exactly one FINISHED run per trial, each with every task's metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], "tags.`zeroflow.role` = 'trial'",
                                  max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    per_trial: dict[str, int] = {}
    problems = []
    for run in runs:
        trial_id = run.data.tags.get("zeroflow.trial_id")
        per_trial[trial_id] = per_trial.get(trial_id, 0) + 1
        if run.info.status != "FINISHED":
            problems.append(f"{run.info.run_name}: {run.info.status}")
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "accuracy"))
        missing = [k for k in ("avg", "last", "forgetting", f"accuracy_task_{N_TASKS - 1}",
                               "forward_passes") if k not in run.data.metrics]
        if steps != list(range(N_TASKS)) or missing:
            problems.append(f"{run.info.run_name}: accuracy steps {steps}, missing {missing}")
    doubles = [t for t, n in per_trial.items() if n != 1]
    if len(per_trial) != trials or doubles or problems:
        raise SystemExit(f"{experiment}: {len(per_trial)} trials with runs of {trials}, "
                         f"{len(doubles)} with more than one run; {problems[:5]}")
    return f"{len(runs)} runs, one per trial, each FINISHED with {N_TASKS} tasks' metrics"


def _measure(args, folder: Path, uri: str, state: Path, trials: int, clock: Clock) -> dict:
    from zeroflow.sweep import run_sweep

    name = f"scale{trials}_{int(time.time())}"
    space = _space(folder, name, trials, args.concurrent)
    clock.reset()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    server0 = _ticks(_server_pids(state))
    load0 = os.getloadavg()[0]
    began = time.perf_counter()
    results, _ = run_sweep(space, storage=str(folder / "ray"), tracking_uri=uri, verbose=0,
                           progress=args.progress)
    wall = time.perf_counter() - began
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    server = _ticks(_server_pids(state)) - server0
    load = (load0 + os.getloadavg()[0]) / 2
    errors = [r for r in results if r.error]
    if errors:
        raise SystemExit(f"{len(errors)} trial(s) failed: {errors[0].error}")
    check = _check_runs(uri, name, trials)
    report_began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "zeroflow.cli", "report", "--experiment", name,
                    "--out", str(folder / f"report_{trials}")], check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    report_s = time.perf_counter() - report_began
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    ideal = trials * N_TASKS * args.sleep / args.concurrent
    return {"trials": trials, "wall": wall, "ideal": ideal, "cpu": cpu, "server": server,
            "spent": dict(clock.spent), "report": report_s, "check": check, "load": load}


def _print(rows: list[dict]) -> None:
    print("\ntrials  wall s  sleep s  load  driver CPU ms/trial  ms/report  "
          "MLflow cb ms/trial  status ms/trial  state save ms/trial  server CPU ms/trial  "
          "report s")
    for r in rows:
        n = r["trials"]
        cb = r["spent"].get("mlflow", 0) + r["spent"].get("mlflow_result", 0)
        print(f"{n:6d} {r['wall']:7.1f} {r['ideal']:8.1f} {r['load']:5.1f} "
              f"{1000 * r['cpu'] / n:19.1f} {1000 * r['cpu'] / (n * N_TASKS):10.2f} "
              f"{1000 * cb / n:19.1f} {1000 * r['spent'].get('progress', 0) / n:16.2f} "
              f"{1000 * r['spent'].get('state_save', 0) / n:20.1f} "
              f"{1000 * r['server'] / n:20.1f} {r['report']:9.1f}")
    for r in rows:
        print(f"  {r['trials']}: {r['check']}; total driver CPU {r['cpu']:.1f} s, "
              f"wall time in the MLflow callback's result handling "
              f"{r['spent'].get('mlflow_result', 0):.1f} s")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]

        def ratio(figure):
            first, last = figure(a) / a["trials"], figure(b) / b["trials"]
            return last / first if first else float("nan")

        def spent(*labels):
            return lambda r: sum(r["spent"].get(label, 0.0) for label in labels)

        print(f"growth of each per-trial figure from {a['trials']} to {b['trials']} trials: "
              f"driver CPU x{ratio(lambda r: r['cpu']):.2f}, "
              f"MLflow callback x{ratio(spent('mlflow', 'mlflow_result')):.2f}, "
              f"state saves x{ratio(spent('state_save')):.2f}, "
              f"status lines x{ratio(spent('progress')):.2f}, "
              f"server CPU x{ratio(lambda r: r['server']):.2f}, "
              f"wall beyond the trials' sleep x{ratio(lambda r: r['wall'] - r['ideal']):.2f}, "
              f"report x{ratio(lambda r: r['report']):.2f}")

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--quick", action="store_true", help="50 and 200 trials")
    parser.add_argument("--concurrent", type=int, default=4, help="trials at a time (4)")
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds per task (0.05)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="without the status-line callback")
    args = parser.parse_args()
    sizes = [50, 200] if args.quick else args.trials

    import signal

    import ray

    # a timeout's SIGTERM still stops Ray and the MLflow server (below), not only this process
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    clock = Clock()
    _instrument(clock)
    with tempfile.TemporaryDirectory(prefix="zf_scale_") as tmp:
        folder = Path(tmp)
        folder.chmod(0o711)  # as root, PostgreSQL runs as `postgres`, which must reach its data
        state = folder / "mlflow"
        server = _server_up(state)
        env = server.pop("_env")
        try:
            os.environ.update(server)
            uri = server["MLFLOW_TRACKING_URI"]
            ray.init(num_cpus=args.concurrent, include_dashboard=False, log_to_driver=False,
                     runtime_env={"worker_process_setup_hook": _install_sleeper,
                                  "env_vars": {SLEEP_ENV: str(args.sleep),
                                               "PYTHONPATH": str(ROOT)}})
            print(f"MLflow server on PostgreSQL with basic auth at {uri}; "
                  f"{args.concurrent} trials at a time, {N_TASKS} tasks x {args.sleep} s each; "
                  f"load average at start {os.getloadavg()}", flush=True)
            rows = []
            for trials in sizes:
                rows.append(_measure(args, folder, uri, state, trials, clock))
                _print(rows)
            print(f"load average at end {os.getloadavg()}")
        finally:
            ray.shutdown()
            subprocess.run([str(ROOT / "cluster/mlflow-server.sh"), "down"], env=env,
                           capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
