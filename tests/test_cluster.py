"""A real two-node Ray cluster on this machine (``cluster/local.sh``): a sweep submitted with
``ray job submit`` spreads over both nodes, survives the loss of the worker node with the same
final metrics as an undisturbed run, and ``down`` leaves no process behind.

One cluster serves the module (starting it costs ~10-30 s on two cores); the tests run in file
order and the last one stops it."""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from zeroflow.sweep import load_space
from zeroflow.trial import run_trial

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
LOCAL_SH = ROOT / "cluster" / "local.sh"
BIN = Path(sys.executable).parent


def _sh(cluster, *args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LOCAL_SH), *args], capture_output=True, text=True,
                          env=cluster.env, **kwargs)


class Cluster:
    def __init__(self, state: Path, env: dict[str, str]):
        self.state, self.env, self.exports, self.sids = state, env, {}, set()

    def read_exports(self, stdout: str) -> None:
        """Take the ``export K=V`` lines ``local.sh up`` (or a restart) printed."""
        for line in stdout.splitlines():
            assert line.startswith("export "), f"local.sh printed a non-export line: {line!r}"
            key, value = line[len("export "):].split("=", 1)
            self.exports[key] = value

    def process_tree(self) -> set[int]:
        """The nodes' processes and all their descendants (Ray's job supervisor starts each
        job driver in a session of its own)."""
        parent = {}
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    stat = (proc / "stat").read_text()
                except OSError:
                    continue
                parent[int(proc.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
        tree = set(self.session_pids())
        grown = True
        while grown:
            kids = {pid for pid, ppid in parent.items() if ppid in tree} - tree
            tree |= kids
            grown = bool(kids)
        return tree

    def listeners(self) -> list[tuple[str, str]]:
        """(local address, process) of every TCP listener of the cluster's processes."""
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True)
        tree, found = self.process_tree(), []
        for line in out.stdout.splitlines():
            fields = line.split()
            for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
                if int(pid) in tree:
                    found.append((fields[3], name))
        return found

    def client_env(self, **extra) -> dict[str, str]:
        return {**self.env, **self.exports, **extra}

    def session_pids(self) -> list[int]:
        """Live processes in the nodes' sessions, plus any whose command line names the state
        folder (a process that escaped its session would show up here)."""
        pids = []
        sids = {int(p.read_text()) for p in self.state.glob("*.sid")} | self.sids
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            state, sid = fields[0], int(fields[3])
            if state != "Z" and (sid in sids or str(self.state) in cmdline):
                pids.append(int(proc.name))
        return pids


@pytest.fixture(scope="module")
def cluster(free_port):
    if not (BIN / "ray").exists():
        pytest.skip("two nodes cannot start: no ray command beside this python")
    state = Path(tempfile.mkdtemp(prefix="zf_cluster_"))
    env = {**os.environ, "ZEROFLOW_CLUSTER_DIR": str(state), "ZEROFLOW_RAY_BIN": str(BIN / "ray"),
           "ZEROFLOW_PYTHON": sys.executable, "ZEROFLOW_RAY_PORT": str(free_port()),
           "ZEROFLOW_DASHBOARD_PORT": str(free_port()), "ZEROFLOW_CLIENT_PORT": str(free_port()),
           "ZEROFLOW_DASHBOARD_METRIC_PORT": str(free_port()),
           "ZEROFLOW_AUTOSCALER_METRIC_PORT": str(free_port()),
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    c = Cluster(state, env)
    up = _sh(c, "up", timeout=240)
    c.sids = {int(p.read_text()) for p in state.glob("*.sid")}
    if up.returncode != 0:
        _sh(c, "down", timeout=120)
        reason = (up.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"two Ray nodes cannot start here: {reason}")
    c.read_exports(up.stdout)
    yield c
    _sh(c, "down", timeout=120)


def _submit(cluster, space: Path | str, storage: Path, uri: str, wait: bool = True,
            submission_id: str | None = None,
            command: str = "sweep") -> subprocess.CompletedProcess | str:
    """``ray job submit --working-dir <repo> -- python -m zeroflow.cli sweep ...`` (or
    ``resume NAME``) with the driver pinned to the head node and MLflow's URI handed to it in
    the job's runtime env."""
    cmd = [str(BIN / "ray"), "job", "submit", "--working-dir", str(ROOT),
           "--entrypoint-resources", json.dumps({"zeroflow_head": 0.01}),
           "--runtime-env-json", json.dumps({"env_vars": {"MLFLOW_TRACKING_URI": uri}})]
    if submission_id:
        cmd += ["--submission-id", submission_id]
    if not wait:
        cmd.append("--no-wait")
    cmd += ["--", sys.executable, "-m", "zeroflow.cli", command, str(space),
            "--storage", str(storage)]
    return subprocess.run(cmd, capture_output=True, text=True, env=cluster.client_env(),
                          timeout=600, cwd=ROOT)


def _wait_for_a_logged_task(uri: str, experiment: str, node: str | None = None):
    """Wait until a trial (on ``node``, if given) is RUNNING and has logged a task."""
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            runs = _trial_runs(uri, experiment)
        except Exception:  # noqa: BLE001 - the store may not exist yet
            runs = []
        if [r for r in runs if r.info.status == "RUNNING" and "accuracy" in r.data.metrics
                and node in (None, r.data.tags.get("zeroflow.node_id"))]:
            return
        time.sleep(0.5)
    pytest.fail(f"no trial logged a task within 300 s ({experiment})")


def _same_as_straight_runs(space: Path, runs: dict) -> None:
    """Every trial's final metrics equal ``run_trial`` of its config, bit for bit."""
    for config in load_space(space).configs:
        straight = run_trial(config).summary
        m = runs[config.optimizer].data.metrics
        for key in ("avg", "last", "forgetting", "forward_passes"):
            assert m[key] == straight[key], (config.optimizer, key)


def _space(tmp_path: Path, name: str, **base) -> Path:
    text = yaml.safe_dump({
        "name": name,
        "base": {"dataset": "digits", "backbone": "tiny", "method": "ease", **base},
        "grid": {"optimizer": ["fo-sgd", "zo-sgd", "zo-adam", "forward-grad"]},
        "resources": {"cpu": 1, "gpu": 0},
        "run": {"max_failures": 2, "max_concurrent": 2, "num_samples": 1}}, sort_keys=False)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _trial_runs(uri: str, experiment: str):
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id], max_results=100)
            if r.data.tags.get("zeroflow.role") == "trial"]


def test_local_up_exports_what_a_client_needs(cluster):
    ex = cluster.exports
    assert set(ex) == {"RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE",
                       "RAY_AUTH_TOKEN_PATH", "ZEROFLOW_HEAD_NODE_ID", "ZEROFLOW_WORKER_NODE_ID"}
    assert ex["RAY_AUTH_MODE"] == "token"
    token = Path(ex["RAY_AUTH_TOKEN_PATH"])
    assert token.stat().st_mode & 0o077 == 0, "the token file must be private"
    assert ex["ZEROFLOW_HEAD_NODE_ID"] != ex["ZEROFLOW_WORKER_NODE_ID"]
    status = _sh(cluster, "status", timeout=60)
    assert "head: up" in status.stdout and "worker: up" in status.stdout
    assert f"node {ex['ZEROFLOW_WORKER_NODE_ID']} worker ALIVE" in status.stdout
    # token auth is really on: the jobs API refuses a client without the token
    bare = {k: v for k, v in cluster.client_env().items() if not k.startswith("RAY_AUTH")}
    refused = subprocess.run([str(BIN / "ray"), "job", "list"], capture_output=True, text=True,
                             env=bare, timeout=60)
    assert refused.returncode != 0


def test_job_submit_sweep_spreads_over_both_nodes(cluster, tmp_path):
    """A reduced quickstart (4 trials, one CPU per node) submitted with ``ray job submit``: every
    trial's run is FINISHED, tagged with the node it ran on, and both nodes were used."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = _space(tmp_path, "cluster_quick", init_cls=4, increment=3, epochs=1,
                   batch_size=16, limit_batches=2, samples_per_class=20)
    job = _submit(cluster, space, tmp_path / "runs", uri)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-2000:]
    runs = _trial_runs(uri, "cluster_quick")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    nodes = {r.data.tags["zeroflow.node_id"] for r in runs}
    assert nodes == {cluster.exports["ZEROFLOW_HEAD_NODE_ID"],
                     cluster.exports["ZEROFLOW_WORKER_NODE_ID"]}
    assert all(r.data.tags.get("zeroflow.node_ip") for r in runs)


def test_losing_the_worker_node_mid_sweep_ends_with_undisturbed_metrics(cluster, tmp_path):
    """SIGKILL every process of the worker node once one of its trials has logged a task: Ray
    retries that trial from its last task checkpoint on the head, the job succeeds, and every
    trial's final metrics equal those of the same trial run straight through, bit for bit."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = _space(tmp_path, "lose_worker", epochs=1, batch_size=32)
    sub = _submit(cluster, space, tmp_path / "runs", uri, wait=False,
                  submission_id=f"lose_worker_{os.getpid()}")
    assert sub.returncode == 0, sub.stderr[-2000:]
    _wait_for_a_logged_task(uri, "lose_worker", cluster.exports["ZEROFLOW_WORKER_NODE_ID"])
    killed = _sh(cluster, "kill-worker", timeout=60)
    assert killed.returncode == 0, killed.stderr

    job_id = f"lose_worker_{os.getpid()}"
    logs = subprocess.run([str(BIN / "ray"), "job", "logs", "--follow", job_id],
                          capture_output=True, text=True, env=cluster.client_env(), timeout=600)
    status = subprocess.run([str(BIN / "ray"), "job", "status", job_id], capture_output=True,
                            text=True, env=cluster.client_env(), timeout=60)
    assert "succeeded" in (status.stdout + status.stderr).lower(), logs.stdout[-4000:]
    assert "sweep lose_worker: 4 trials, 0 errored" in logs.stdout
    # a trial was really lost with the worker (Ray's error record in its storage folder) and
    # retried (the driver's status line says so)
    assert list((tmp_path / "runs" / "lose_worker").glob("*/error.txt")), (
        "no trial was lost with the worker: nothing tested")
    assert "1 retried" in logs.stdout or "2 retried" in logs.stdout, logs.stdout[-3000:]

    runs = {r.data.params["optimizer"]: r for r in _trial_runs(uri, "lose_worker")}
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs.values())
    retried = [r for r in runs.values()
               if r.data.tags["zeroflow.node_id"] == cluster.exports["ZEROFLOW_HEAD_NODE_ID"]]
    assert len(retried) == 4, "after the loss every trial must have finished on the head"
    _same_as_straight_runs(space, runs)


def test_losing_the_head_then_resume_as_a_job_finishes_every_trial_once(cluster, tmp_path):
    """Regaining the worker lost before (``local.sh restart-worker``); then the recipe for a lost
    head: SIGKILL the head node (the sweep's job driver dies with it) once a trial has logged a
    task, ``local.sh restart-head``, then ``zeroflow resume`` submitted as a job: every trial
    FINISHED in one MLflow run each, with the metrics of uninterrupted runs. While the sweep
    runs, every listener of the cluster is on loopback."""
    # the worker lost by the test before comes back first
    back = _sh(cluster, "restart-worker", timeout=300)
    assert back.returncode == 0, back.stderr[-3000:]
    cluster.read_exports(back.stdout)
    assert "worker: up" in _sh(cluster, "status", timeout=60).stdout

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = _space(tmp_path, "lose_head", epochs=1, batch_size=32)
    sub = _submit(cluster, space, tmp_path / "runs", uri, wait=False,
                  submission_id=f"lose_head_{os.getpid()}")
    assert sub.returncode == 0, sub.stderr[-2000:]
    _wait_for_a_logged_task(uri, "lose_head")
    # while a sweep job runs trials: every listener of the cluster is on loopback
    listeners = cluster.listeners()
    assert len(listeners) >= 10, listeners  # GCS, raylets, agents, dashboard, driver, trials
    outside = [(a, n) for a, n in listeners
               if not a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:"))]
    assert outside == [], f"listening beyond loopback: {outside}"
    assert _sh(cluster, "kill-head", timeout=60).returncode == 0
    restarted = _sh(cluster, "restart-head", timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    cluster.read_exports(restarted.stdout)
    before = {r.data.tags["zeroflow.trial_id"] for r in _trial_runs(uri, "lose_head")}

    job = _submit(cluster, "lose_head", tmp_path / "runs", uri, command="resume")
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-2000:]
    assert "sweep lose_head: 4 trials, 0 errored" in job.stdout, job.stdout[-3000:]
    runs = _trial_runs(uri, "lose_head")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs), [
        (r.data.params["optimizer"], r.info.status) for r in runs]
    assert before <= {r.data.tags["zeroflow.trial_id"] for r in runs}, "a run was opened twice"
    runs = {r.data.params["optimizer"]: r for r in runs}
    assert len(runs) == 4
    _same_as_straight_runs(space, runs)


def test_down_leaves_no_process_behind(cluster):
    assert cluster.session_pids(), "the cluster's head should still be running here"
    down = _sh(cluster, "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert cluster.session_pids() == []
