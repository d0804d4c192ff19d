"""A sweep on Slurm through ``cluster/slurm/zeroflow.sbatch``, on a real Slurm that this module
starts on the machine: ``munged`` (as the munge user), ``slurmctld`` and two ``slurmd`` (two
nodes on one host, ``slurmd -N``), each node with half of the machine's CPUs and one GPU whose
device file is /dev/null (so Slurm allocates and announces a GPU, and the script's GPUs-from-
the-allocation path runs; no trial asks for one). Everything lives in a temporary folder under a
generated ``slurm.conf`` named by ``SLURM_CONF``; nothing outside it is touched. Debian's
``slurm-wlm`` and ``munge`` packages; skipped with the reason where they are missing or the
daemons do not come up.

One Slurm serves the module; the tests run in file order and the last one stops it and finds
no process left."""

import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster" / "slurm" / "zeroflow.sbatch"
BIN = Path(sys.executable).parent
TOOLS = ("slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "scancel", "munged", "setpriv")


def _missing() -> str | None:
    path = f"/usr/sbin:/usr/bin:{os.environ.get('PATH', '')}"
    absent = [t for t in TOOLS if not shutil.which(t, path=path)]
    if absent:
        return (f"Slurm cannot start here: {', '.join(absent)} not installed "
                f"(Debian: apt-get install slurm-wlm munge util-linux)")
    if os.geteuid() != 0:
        return "Slurm cannot start here: slurmd and munged need root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "Slurm cannot start here: there is no 'munge' user (Debian's munge package adds it)"
    if not (BIN / "ray").exists():
        return "no ray command beside this python (pip install -e '.[cluster]')"
    return None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


class LocalSlurm:
    """munged, slurmctld and one slurmd per node, each in its own session, started from a
    config in ``root``."""

    def __init__(self, root: Path, free_port):
        self.root, self.daemons = root, {}
        cpus = len(os.sched_getaffinity(0))
        # two nodes of half the CPUs each; one node where a single CPU cannot be split
        self.nodes = ["zfn1", "zfn2"] if cpus >= 2 else ["zfn1"]
        self.cpus = max(1, cpus // len(self.nodes))
        low = random.randrange(22000, 30000, 1000)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "RAY_", "MLFLOW_"))}
        self.env.update({
            "SLURM_CONF": str(root / "slurm.conf"),
            "PATH": f"{BIN}:/usr/sbin:/usr/bin:{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "ZEROFLOW_RAY_TMPDIR": str(root),
            "ZEROFLOW_OBJECT_STORE_MB": "256",
            # two raylets on one host: disjoint worker-port ranges (split by the script)
            "ZEROFLOW_RAY_WORKER_PORTS": f"{low}-{low + 999}",
        })
        self.write_config(free_port)

    def write_config(self, free_port) -> None:
        r = self.root
        munge = r / "munge"
        munge.mkdir(mode=0o711)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        uid, gid = pwd.getpwnam("munge").pw_uid, pwd.getpwnam("munge").pw_gid
        for path in (munge, key):
            os.chown(path, uid, gid)
        key.chmod(0o400)
        munge.chmod(0o711)  # munged wants its socket's folder searchable by all
        for sub in ("ctld", *(f"spool/{n}" for n in self.nodes)):
            (r / sub).mkdir(parents=True)
        self.munge_socket = munge / "munge.socket"
        host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
        lines = [
            "ClusterName=zftest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={r}/ctld",
            f"SlurmdSpoolDir={r}/spool/%n",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd-%n.pid",
            f"SlurmctldLogFile={r}/slurmctld.log", f"SlurmdLogFile={r}/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill", "MpiDefault=none", "SwitchType=switch/none",
            "JobCompType=jobcomp/none", "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none", "MailProg=/bin/true",
            "ReturnToService=2", "MinJobAge=3600", "KillWait=30",
            "GresTypes=gpu",
        ]
        for name in self.nodes:
            lines.append(f"NodeName={name} NodeHostname={name} NodeAddr=127.0.0.1 "
                         f"Port={free_port()} CPUs={self.cpus} Gres=gpu:1 State=UNKNOWN")
        lines.append(f"PartitionName=zftest Nodes={','.join(self.nodes)} Default=YES "
                     f"MaxTime=INFINITE State=UP")
        (r / "slurm.conf").write_text("\n".join(lines) + "\n")
        (r / "gres.conf").write_text("Name=gpu File=/dev/null\n")

    def spawn(self, name: str, cmd: list[str]) -> None:
        with open(self.root / f"{name}.out", "w") as out:
            self.daemons[name] = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=self.env, cwd=self.root)

    def start(self) -> str | None:
        """Start the daemons; the reason they did not come up, or None."""
        m = self.root / "munge"
        self.spawn("munged", [
            "setpriv", "--reuid", "munge", "--regid", "munge", "--init-groups",
            "munged", "-F", "--num-threads=4", f"--socket={self.munge_socket}",
            f"--key-file={m / 'munge.key'}", f"--pid-file={m / 'munged.pid'}",
            f"--log-file={m / 'munged.log'}", f"--seed-file={m / 'munged.seed'}"])
        if not self.wait(lambda: self.munge_socket.exists(), 20):
            return "munged did not start: " + _tail(self.root / "munged.out", 3)
        conf = str(self.root / "slurm.conf")
        self.spawn("slurmctld", ["slurmctld", "-D", "-f", conf])
        if not self.wait(lambda: "UP" in self.run("scontrol", "ping").stdout, 30):
            return "slurmctld did not start: " + _tail(self.root / "slurmctld.log", 3)
        for name in self.nodes:
            self.spawn(f"slurmd-{name}", ["slurmd", "-D", "-N", name, "-f", conf])

        def idle():
            states = self.run("sinfo", "-h", "-N", "-o", "%N %t").stdout.split()
            return states[1::2] == ["idle"] * len(self.nodes)

        if not self.wait(idle, 60):
            return (f"the slurmd nodes did not become idle: "
                    f"{self.run('sinfo', '-h', '-N', '-o', '%N %t %E').stdout.strip()}; "
                    + _tail(self.root / f"slurmd-{self.nodes[0]}.log", 3))
        return None

    @staticmethod
    def wait(ready, seconds: float) -> bool:
        deadline = time.time() + seconds
        while time.time() < deadline:
            if ready():
                return True
            time.sleep(0.5)
        return False

    def run(self, *cmd: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=60,
                              **kwargs)

    def sbatch(self, *args: str, env: dict | None = None) -> str:
        out = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True,
                             env={**self.env, **(env or {})}, cwd=self.root, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        text = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def wait_job(self, job_id: str, seconds: float = 600) -> dict[str, str]:
        """The job's fields once it has ended (``scontrol show job``; no slurmdbd for sacct)."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            fields = self.job(job_id)
            if fields.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                          "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"):
                return fields
            time.sleep(2)
        self.run("scancel", job_id)
        pytest.fail(f"job {job_id} did not end within {seconds:g} s\n" + self.report(job_id))

    def report(self, job_id: str) -> str:
        """The job's output and its nodes' Ray logs, for assertion messages."""
        parts = [f"--- job {job_id} output (tail):", _tail(self.root / f"zeroflow-{job_id}.out")]
        for log in sorted((self.root / f"zeroflow-slurm-{job_id}").glob("ray-*.log")):
            parts += [f"--- {log.name} (tail):", _tail(log, 15)]
        return "\n".join(parts)

    def processes(self) -> dict[int, str]:
        """Live processes of the daemons' sessions, or whose command line or environment names
        the temporary folder (every job process inherits SLURM_CONF; Ray's workers too)."""
        sids = {p.pid for p in self.daemons.values()}
        root, found = str(self.root), {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                stat = (proc / "stat").read_text()
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
                environ = (proc / "environ").read_bytes().decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z" and (int(fields[3]) in sids or root in cmdline
                                     or root in environ):
                found[int(proc.name)] = cmdline.strip()
        return found

    def job_processes(self) -> dict[int, str]:
        """What runs besides the daemons themselves (and slurmctld's helper, slurmscriptd)."""
        daemons = {p.pid for p in self.daemons.values() if p.poll() is None}
        return {pid: cmd for pid, cmd in self.processes().items()
                if pid not in daemons and "slurmscriptd" not in cmd}

    def stop(self) -> dict[int, str]:
        """Stop the daemons (slurmd first); return what was still alive afterwards, then kill
        that too."""
        for name in [n for n in self.daemons if n.startswith("slurmd")] + ["slurmctld", "munged"]:
            proc = self.daemons.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.wait(lambda: not self.processes(), 10)
        left = self.processes()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return left


@pytest.fixture(scope="module")
def slurm(free_port):
    missing = _missing()
    if missing:
        pytest.skip(missing)
    # short: Ray's socket paths under the node temp folders must stay below 107 characters
    root = Path(tempfile.mkdtemp(prefix="zfs_"))
    root.chmod(0o711)  # munged (the munge user) reaches its folder inside
    s = LocalSlurm(root, free_port)
    reason = s.start()
    if reason:
        s.stop()
        pytest.skip(reason)
    yield s
    s.stop()
    shutil.rmtree(root, ignore_errors=True)


def _space(root: Path, name: str, max_concurrent: int = 2, **base) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name,
        "base": {"dataset": "digits", "backbone": "tiny", "method": "ease", "epochs": 1,
                 "init_cls": 4, "increment": 3, "batch_size": 16, "limit_batches": 2,
                 "samples_per_class": 20, **base},
        "grid": {"optimizer": ["fo-sgd", "zo-sgd"]},
        "resources": {"cpu": 1},
        "run": {"max_failures": 1, "max_concurrent": max_concurrent}}, sort_keys=False))
    return path


def _trial_runs(uri: str, experiment: str):
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id], max_results=100)
            if r.data.tags.get("zeroflow.role") == "trial"]


def test_outside_a_job_the_script_refuses_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SLURMD_"))}
    out = subprocess.run(["bash", str(SCRIPT), "space.yaml", "--storage", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "not inside a Slurm batch job" in lines[0], out.stderr
    assert "sbatch" in lines[0]
    assert not list(tmp_path.iterdir()), "nothing is written before the input is checked"


@pytest.mark.slurm
@pytest.mark.ray
def test_bad_input_fails_the_job_with_a_one_line_error(slurm):
    """Each mistake ends the job FAILED with exit code 2 and one line naming it and the fix,
    before any Ray node starts."""
    space = _space(slurm.root, "bad_input_space")
    cases = {
        "missing_space": (["nope.yaml", "--storage", str(slurm.root / "runs")],
                          "space file 'nope.yaml' not found"),
        "no_storage": ([str(space)], "no storage given: pass --storage DIR"),
        "relative_storage": ([str(space), "--storage", "runs"],
                             "storage 'runs' is relative"),
        "address": ([str(space), "--storage", str(slurm.root / "runs"), "--address", "x:1"],
                    "do not pass --address"),
        "resume_without_name": (["resume", "--storage", str(slurm.root / "runs")],
                                "'resume' needs a sweep name first"),
    }
    jobs = {case: slurm.sbatch("--nodes=1", str(SCRIPT), *args)
            for case, (args, _) in cases.items()}
    for case, job_id in jobs.items():
        fields = slurm.wait_job(job_id, 120)
        output = (slurm.root / f"zeroflow-{job_id}.out").read_text()
        assert fields["JobState"] == "FAILED" and fields["ExitCode"] == "2:0", (
            case, fields.get("JobState"), fields.get("ExitCode"), output)
        lines = output.strip().splitlines()
        assert len(lines) == 1 and cases[case][1] in lines[0], (case, output)
        assert not (slurm.root / f"zeroflow-slurm-{job_id}").exists(), case


@pytest.mark.slurm
@pytest.mark.ray
def test_sbatch_sweep_finishes_every_trial_on_the_allocated_nodes(slurm):
    """The reduced sweep as one job over every node: the job COMPLETED, both trials FINISHED
    in MLflow, each on a Ray node the job started (both nodes used when there are two), each
    node announced with the CPUs and the GPU Slurm allocated it, and nothing of the job left
    running or in the nodes' temp folders."""
    space = _space(slurm.root, "slurm_sweep")
    job_id = slurm.sbatch(f"--nodes={len(slurm.nodes)}", "--gres=gpu:1", str(SCRIPT),
                          str(space), "--storage", str(slurm.root / "runs"))
    fields = slurm.wait_job(job_id)
    report = slurm.report(job_id)
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", report

    output = (slurm.root / f"zeroflow-{job_id}.out").read_text()
    alive = re.findall(r"node (\w+) ALIVE: (head|worker) at \S+, CPU (\S+), GPU (\S+), "
                       r"Ray node id (\w+)", output)
    assert sorted(a[0] for a in alive) == slurm.nodes, report
    assert {(a[2], a[3]) for a in alive} == {(f"{slurm.cpus}", "1")}, report
    assert [a[1] for a in alive].count("head") == 1, report
    runs = _trial_runs(slurm.env["MLFLOW_TRACKING_URI"], "slurm_sweep")
    assert len(runs) == 2, report
    assert all(r.info.status == "FINISHED" for r in runs), (
        [r.info.status for r in runs], report)
    used = {r.data.tags["zeroflow.node_id"] for r in runs}
    assert used <= {a[4] for a in alive}, report
    if len(slurm.nodes) == 2:
        assert len(used) == 2, f"both trials ran on one node: {used}\n{report}"
    assert "zeroflow.sbatch: done (exit 0)" in output, report

    job_dir = slurm.root / f"zeroflow-slurm-{job_id}"
    assert (job_dir.stat().st_mode & 0o777) == 0o700
    assert (job_dir / "auth_token").stat().st_mode & 0o077 == 0, "the token must be private"
    assert not list(slurm.root.glob("zf-ray-*")), "a node left its Ray temp folder"
    assert slurm.wait(lambda: not slurm.job_processes(), 30), (
        f"processes of the job outlived it: {slurm.job_processes()}")


@pytest.mark.slurm
@pytest.mark.ray
def test_a_signalled_job_stops_cleanly_and_resumes_its_sweep_when_requeued(slurm):
    """The end of a time limit with ``--signal=B:TERM@...`` (``scancel --batch --signal=TERM``
    delivers the same SIGTERM to the script alone), once the first trial has logged a task (one
    trial at a time, so the second has not started): the script interrupts its driver (Tune
    saves its state), stops its nodes itself and exits 143, leaving no process, no node temp
    folder and a trial unfinished. Requeued (as a preempted job is), the same job runs again
    (SLURM_RESTART_COUNT=1), resumes the sweep instead of refusing it as existing, and every
    trial ends FINISHED in one MLflow run."""
    uri = slurm.env["MLFLOW_TRACKING_URI"]
    # trials long enough (4 epochs of 6 batches per task) that the signal lands in one
    space = _space(slurm.root, "slurm_requeue", max_concurrent=1, epochs=4, limit_batches=6)
    job_id = slurm.sbatch(f"--nodes={len(slurm.nodes)}", str(SCRIPT), str(space),
                          "--storage", str(slurm.root / "runs"))

    def logged_a_task():
        if slurm.job(job_id).get("JobState") not in ("PENDING", "RUNNING"):
            return True
        try:
            runs = _trial_runs(uri, "slurm_requeue")
        except Exception:  # noqa: BLE001 - the store may not exist yet
            return False
        return any(r.info.status == "RUNNING" and "accuracy" in r.data.metrics for r in runs)

    assert slurm.wait(logged_a_task, 400), "no trial logged a task\n" + slurm.report(job_id)
    assert slurm.job(job_id)["JobState"] == "RUNNING", (
        "the job ended before it could be signalled\n" + slurm.report(job_id))
    signalled = slurm.run("scancel", "--batch", "--signal=TERM", job_id)
    assert signalled.returncode == 0, signalled.stderr
    fields = slurm.wait_job(job_id, 180)
    report = slurm.report(job_id)
    assert fields["JobState"] == "FAILED" and fields["ExitCode"] == "143:0", report
    for line in ("received SIGTERM", "stopping the sweep driver", "stopping the Ray nodes",
                 "done (exit 143)", *(f"{n}: Ray node stopped" for n in slurm.nodes)):
        assert f"zeroflow.sbatch: {line}" in report, (line, report)
    assert "the most recent state was saved" in report, report
    assert slurm.wait(lambda: not slurm.job_processes(), 60), (
        f"processes of the stopped job outlived it: {slurm.job_processes()}\n{report}")
    assert not list(slurm.root.glob("zf-ray-*")), "a node left its Ray temp folder\n" + report
    assert [r for r in _trial_runs(uri, "slurm_requeue") if r.info.status != "FINISHED"], (
        "every trial finished before the signal: nothing left to resume\n" + report)

    requeue = slurm.run("scontrol", "requeue", job_id)
    assert requeue.returncode == 0, requeue.stderr
    # a requeued job waits out a delay (BeginTime) first: let it start now
    assert slurm.run("scontrol", "update", f"JobId={job_id}", "StartTime=now").returncode == 0
    assert slurm.wait(lambda: slurm.job(job_id).get("Restarts") == "1", 60), slurm.job(job_id)
    fields = slurm.wait_job(job_id)
    report = slurm.report(job_id)
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", report
    output = (slurm.root / f"zeroflow-{job_id}.out").read_text(errors="replace")  # all of it
    assert ("zeroflow.sbatch: restarted by Slurm (restart 1): resuming sweep slurm_requeue"
            in output), report
    runs = _trial_runs(uri, "slurm_requeue")
    assert sorted(r.data.params["optimizer"] for r in runs) == ["fo-sgd", "zo-sgd"], report
    assert all(r.info.status == "FINISHED" for r in runs), (
        [r.info.status for r in runs], report)
    assert slurm.wait(lambda: not slurm.job_processes(), 30), (
        f"processes of the job outlived it: {slurm.job_processes()}")


@pytest.mark.slurm
@pytest.mark.ray
def test_stopping_slurm_leaves_no_process(slurm):
    left = slurm.stop()
    assert not left, f"still alive after the daemons stopped: {left}"
