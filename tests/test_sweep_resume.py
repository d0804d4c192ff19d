"""A sweep whose driver is SIGKILLed is finished by ``zeroflow resume``: finished trials are
not rerun, unfinished ones continue, and MLflow holds one run per trial with no task twice.
Both drivers are subprocesses (each starts its own Ray)."""

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import yaml

from zeroflow.trial import run_trial

pytestmark = pytest.mark.ray

# five tasks; the second trial (fo-sgd) trains 20× longer per task, so that it is still running
# when the driver is killed after its first task, even on two quiet cores
BASE = dict(dataset="digits", init_cls=2, increment=2, epochs=3, limit_batches=4, batch_size=16,
            samples_per_class=20)
SLOW = {"optimizer": "fo-sgd", "epochs": 60}


def children(uri, name):
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client, [], []
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return (client, [r for r in runs if r.data.tags.get("zeroflow.role") == "sweep"],
            [r for r in runs if r.data.tags.get("zeroflow.role") == "trial"])


def test_killed_driver_is_finished_by_resume(tmp_path):
    space = tmp_path / "resumable.yaml"
    space.write_text(yaml.safe_dump({
        "name": "resumable", "base": BASE,
        "grid": {"optimizer": ["zo-sgd", "fo-sgd"], "method": ["finetune"]},
        "overrides": [{"when": {"optimizer": "fo-sgd"}, "set": {"epochs": SLOW["epochs"]}}],
        "resources": {"cpu": 1}, "run": {"max_failures": 1, "max_concurrent": 1}},
        sort_keys=False))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "zeroflow.cli"]
    storage = str(tmp_path / "runs")
    driver = subprocess.Popen(cmd + ["sweep", str(space), "--storage", storage], env=env,
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.time() + 400
        done = started = 0
        while time.time() < deadline and driver.poll() is None:  # one trial done, one begun
            time.sleep(0.5)
            client, _, kids = children(uri, "resumable")
            done = sum(r.info.status == "FINISHED" for r in kids)
            started = sum(r.info.status == "RUNNING" and len(
                client.get_metric_history(r.info.run_id, "accuracy")) >= 1 for r in kids)
            if done == 1 and started == 1:
                break
        assert driver.poll() is None and done == 1 and started == 1, (
            "the sweep ended before it could be killed")
        seen = time.time()
        states = tmp_path / "runs" / "resumable"
        while time.time() < deadline and driver.poll() is None:  # Tune saved state since?
            if any(p.stat().st_mtime > seen for p in states.glob("experiment_state-*.json")):
                break
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    killed_at = time.time()
    _, _, kids = children(uri, "resumable")
    finished = {r.data.tags["zeroflow.trial_id"] for r in kids if r.info.status == "FINISHED"}
    assert len(finished) == 1, "one trial must be finished and one left to resume"

    done = subprocess.run(cmd + ["resume", "resumable", "--storage", storage], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sweep resumable: 2 trials, 0 errored" in done.stdout

    # Ray's record of every result per trial: the finished trial reported nothing after the
    # kill (not rerun); the other continued from a task checkpoint, never from task 0
    after = {}
    for trial_dir in states.iterdir():
        if (trial_dir / "result.json").exists():
            lines = [json.loads(x) for x in (trial_dir / "result.json").read_text().splitlines()]
            after[trial_dir.name] = [r for r in lines if r["timestamp"] > killed_at]
    assert len(after) == 2 and set(after) >= finished
    for trial_id, results in after.items():
        if trial_id in finished:
            assert results == [], "a finished trial ran again"
        else:
            assert results and all(r["start_task"] >= 1 for r in results), results
            assert results[-1]["task"] == results[-1]["n_tasks"] - 1

    client, parents, kids = children(uri, "resumable")
    assert len(parents) == 1 and len(kids) == 2
    for run in kids:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")]
        assert steps == [0, 1, 2, 3, 4], steps
        optimizer = run.data.params["optimizer"]
        straight = run_trial({**BASE, "method": "finetune", "optimizer": optimizer,
                              **(SLOW if optimizer == SLOW["optimizer"] else {})})
        for key in ("avg", "last", "forgetting", "forward_passes"):
            assert run.data.metrics[key] == straight.summary[key], key
