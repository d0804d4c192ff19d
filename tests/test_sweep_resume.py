"""A sweep whose driver is SIGKILLed is finished by ``zeroflow resume``, whatever Tune's saved
state says: trials with override rules that never started run with their rules, a trial that
finished before the kill is not trained again, a running one continues from its newest
checkpoint, and MLflow holds one run per trial with every task once. A copied sweep folder
resumes from its own state only, and a folder someone else could write is refused before
anything in it is unpickled.

The driver under test runs with ``TUNE_GLOBAL_CHECKPOINT_S=3600``: Tune saves its experiment
state once, near the start, and never again before the kill, so that state lags everything
that happened since (the worst case of the period sweeps use: 2 s up to 100 trials, then
longer, see `zeroflow.sweep.driver.state_period`)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from zeroflow.trial import run_trial

pytestmark = pytest.mark.ray

# five tasks; the second trial (fo-sgd) trains 20x longer per task, so that it is still running
# when the driver is killed after its first task, even on two quiet cores
BASE = dict(dataset="digits", init_cls=2, increment=2, epochs=3, limit_batches=4, batch_size=16,
            samples_per_class=20, method="finetune")
OPTIMIZERS = ["zo-sgd", "fo-sgd", "zo-adam", "fo-adam"]
RULES = [{"when": {"optimizer": "fo-sgd"}, "set": {"epochs": 60, "lr": 0.02}},
         {"when": {"optimizer": ["zo-adam", "fo-adam"]}, "set": {"lr": 0.005}}]
CLI = [sys.executable, "-m", "zeroflow.cli"]


def straight_config(optimizer: str) -> dict:
    config = {**BASE, "optimizer": optimizer}
    for rule in RULES:
        allowed = rule["when"]["optimizer"]
        if optimizer in (allowed if isinstance(allowed, list) else [allowed]):
            config.update(rule["set"])
    return config


def children(uri, name):
    if not Path(uri[len("sqlite:///"):]).exists():  # the driver creates it (owner-only)
        return None, [], []
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client, [], []
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return (client, [r for r in runs if r.data.tags.get("zeroflow.role") == "sweep"],
            [r for r in runs if r.data.tags.get("zeroflow.role") == "trial"])


def ray_results(folder: Path) -> dict[str, list[dict]]:
    """Ray's own record of every result, per trial folder."""
    out = {}
    for trial_dir in folder.iterdir():
        if (trial_dir / "result.json").exists():
            out[trial_dir.name] = [json.loads(x) for x in
                                   (trial_dir / "result.json").read_text().splitlines()]
    return out


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A 4-trial sweep (override rules, one trial at a time) whose driver was SIGKILLed once
    the first trial had finished and the second had logged a task; the third and fourth never
    started. Yields the folder, the MLflow URI, the kill time and the finished trial's id."""
    tmp = tmp_path_factory.mktemp("resume")
    space = tmp / "resumable.yaml"
    space.write_text(yaml.safe_dump({
        "name": "resumable", "base": BASE, "grid": {"optimizer": OPTIMIZERS},
        "overrides": RULES, "resources": {"cpu": 1},
        "run": {"max_failures": 1, "max_concurrent": 1}}, sort_keys=False))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TUNE_GLOBAL_CHECKPOINT_S": "3600"}
    driver = subprocess.Popen(CLI + ["sweep", str(space), "--storage", str(tmp / "runs")],
                              env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 400
        done = started = 0
        while time.time() < deadline and driver.poll() is None:  # one trial done, one begun
            time.sleep(0.3)
            try:
                client, _, kids = children(uri, "resumable")
            except Exception:  # noqa: BLE001 - the driver may be creating the store's tables
                continue
            done = sum(r.info.status == "FINISHED" for r in kids)
            started = sum(r.info.status == "RUNNING" and len(
                client.get_metric_history(r.info.run_id, "accuracy")) >= 1 for r in kids)
            if done == 1 and started == 1:
                break
        assert driver.poll() is None and done == 1 and started == 1, (
            "the sweep ended before it could be killed")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    _, _, kids = children(uri, "resumable")
    finished, = [r.data.tags["zeroflow.trial_id"] for r in kids if r.info.status == "FINISHED"]
    folder = tmp / "runs" / "resumable"
    assert folder.stat().st_mode & 0o077 == 0, "a sweep's folder is its owner's only"
    assert (tmp / "mlflow.db").stat().st_mode & 0o077 == 0
    assert (tmp / "mlartifacts").stat().st_mode & 0o077 == 0
    shutil.copytree(folder, tmp / "pristine" / "resumable")  # for the tests of copies
    yield folder, uri, time.time(), finished


class Payload:
    """Unpickling this creates the file ``target``: what a planted tuner.pkl could do."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def resume_cli(folder, tmp_path, uri=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri or f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return subprocess.run(CLI + ["resume", str(folder)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)


def test_a_sweep_folder_others_could_write_is_refused_before_anything_is_unpickled(
        killed, tmp_path):
    folder = killed[0].parent.parent / "pristine" / "resumable"
    # a tuner.pkl writable by everyone: refused, naming it
    loose = tmp_path / "loose" / "resumable"
    shutil.copytree(folder, loose)
    os.chmod(loose / "tuner.pkl", 0o666)
    done = resume_cli(loose, tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert f"{loose / 'tuner.pkl'} is writable by group or others (mode 666)" in lines[0]
    assert "chmod -R go-w" in lines[0]

    # a payload planted in a sweep folder others can write: refused, and it never runs
    import pickle

    planted = tmp_path / "planted" / "resumable"
    shutil.copytree(folder, planted)
    target = tmp_path / "payload_ran"
    (planted / "tuner.pkl").write_bytes(pickle.dumps(Payload(target)))
    os.chmod(planted, 0o777)
    done = resume_cli(planted, tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert f"{planted} is writable by group or others (mode 777)" in lines[0]
    assert not target.exists(), "the planted payload ran"
    pickle.loads((planted / "tuner.pkl").read_bytes())  # the payload is real: loading runs it
    assert target.exists()


def test_killed_driver_is_finished_by_resume_bit_for_bit(killed, tmp_path):
    folder, uri, killed_at, finished = killed
    state = max(folder.glob("experiment_state-*.json"), key=os.path.getmtime)
    assert finished not in state.read_text() or '"status": "TERMINATED"' not in (
        state.read_text()), "Tune's saved state must lag the finished trial for this test"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    done = subprocess.run(CLI + ["resume", "resumable", "--storage", str(folder.parent)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sweep resumable: 4 trials, 0 errored" in done.stdout
    assert f"browse every run: zeroflow ui   (MLflow store: {uri})" in done.stdout

    after = {trial: [r for r in rows if r["timestamp"] > killed_at]
             for trial, rows in ray_results(folder).items()}
    assert len(after) == 4 and finished in after
    # the finished trial trained nothing again: it only reported its final result once more,
    # so that Tune knows it is complete
    assert [(r["task"], r.get("replayed")) for r in after[finished]] == [(4, True)]
    resumed = [t for t in after if t != finished and any(
        r["start_task"] > 0 for r in after[t])]
    assert len(resumed) == 1, "the trial running at the kill continues from a checkpoint"
    assert all(r["start_task"] >= 1 for r in after[resumed[0]])
    # no checkpoint was written over (Tune's stale state numbers folders from the ones it had
    # recorded): folder n holds task n, and the replay a folder more, of the last task
    from zeroflow.sweep.checkpoints import MARKER

    for trial in after:
        for marker in (folder / trial).glob(f"checkpoint_*/{MARKER}"):
            index = int(marker.parent.name.split("_")[1])
            assert json.loads(marker.read_text())["results"][-1]["task"] == min(index, 4), (
                marker)

    client, parents, kids = children(uri, "resumable")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == 4, "one MLflow run per trial, none opened twice"
    assert sorted(r.data.params["optimizer"] for r in kids) == sorted(OPTIMIZERS)
    for run in kids:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")]
        assert steps == [0, 1, 2, 3, 4], steps
        straight = run_trial(straight_config(run.data.params["optimizer"]))
        assert float(run.data.params["lr"] if run.data.params["lr"] != "None" else "nan") == (
            straight.config.lr if straight.config.lr is not None else float("nan")) or (
            straight.config.lr is None)
        for key in ("avg", "last", "forgetting", "forward_passes"):
            assert run.data.metrics[key] == straight.summary[key], key


def test_a_copied_sweep_folder_resumes_from_its_own_state(killed, tmp_path, monkeypatch,
                                                          capsys):
    """Two copies of one sweep resumed in one Ray session (as jobs on a long-lived cluster are):
    the second must not restore the first one's state, which Ray stages under the same name,
    and the trials it starts must write to the copy, not to the folder named in Tune's saved
    searcher state (the original's)."""
    import ray

    from zeroflow.sweep import resume_sweep

    folder, uri = killed[0], killed[1]
    copy = killed[0].parent.parent / "pristine" / "resumable"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        first, _ = resume_sweep(str(folder), verbose=0)  # finished already: nothing to run
        assert len(first) == 4 and first.num_errors == 0
        before = {p.name: p.stat().st_mtime for p in folder.iterdir()}
        own = f"sqlite:///{tmp_path / 'copy.db'}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", own)
        second, _ = resume_sweep(str(copy), verbose=0)
    finally:
        ray.shutdown()
    # the environment's MLflow store differs from the launch's: said in one line, and used
    notice = [ln for ln in capsys.readouterr().err.splitlines() if "this resume logs to" in ln]
    assert notice == [f"zeroflow: this resume logs to {own} (MLFLOW_TRACKING_URI); the sweep "
                      f"was launched with {uri}"]
    assert len(second) == 4 and second.num_errors == 0
    assert all(r.metrics["task"] == r.metrics["n_tasks"] - 1 for r in second)
    after = {p.name: p.stat().st_mtime for p in folder.iterdir()}
    assert after == before, "resuming the copy wrote into the original's folder"
    # the copy finished every trial on its own, with the original's numbers
    _, _, kids = children(own, "resumable")
    _, _, originals = children(uri, "resumable")
    assert len(kids) == 4 and all(r.info.status == "FINISHED" for r in kids)
    avg = {r.data.params["optimizer"]: r.data.metrics["avg"] for r in originals}
    assert {r.data.params["optimizer"]: r.data.metrics["avg"] for r in kids} == avg
