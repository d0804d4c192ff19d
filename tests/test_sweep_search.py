"""Search and early stopping: a space with ``search: {algorithm: optuna}`` and ``scheduler:
{type: asha}`` runs its trials, ASHA stops some (their MLflow runs end KILLED with the reason),
the report leaves those out, and a sweep whose driver was SIGKILLed part-way is finished by
``zeroflow resume`` with the searcher's and scheduler's state: no trial twice, none missing.

One sweep serves all of it (each driver starts its own Ray: seconds on two cores)."""

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import yaml
from conftest import tiny_trial

from zeroflow.errors import ConfigError
from zeroflow.sweep import load_space

N_TRIALS = 7


def _space(tmp_path, name="searched", **sections):
    """finetune on digits (5 tasks): its accuracy depends strongly on lr, so ASHA's rungs
    separate trials; one trial at a time makes the searcher's and ASHA's decisions depend on
    results only, not on timing."""
    spec = {
        "name": name,
        "base": tiny_trial(method="finetune", init_cls=2, increment=2, epochs=1, limit_batches=3),
        "grid": {"optimizer": ["fo-sgd", "zo-sgd"]},
        "sample": {"lr": {"loguniform": [1.0e-4, 3.0e-1]}},
        "search": {"algorithm": "optuna", "seed": 0},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "resources": {"cpu": 1},
        "run": {"max_failures": 1, "max_concurrent": 1, "num_samples": N_TRIALS}, **sections}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize("section, bad, message", [
    ("search", {"algorithm": "hyperopt"}, "search.algorithm='hyperopt' is not one of"),
    ("search", {"algoritm": "optuna"}, "unknown search key(s) algoritm"),
    ("search", {"metric": "loss"}, "search.metric='loss' is not one of"),
    ("search", {"mode": "up"}, "search.mode='up' must be max or min"),
    ("scheduler", {"type": "hyperband"}, "'scheduler' must be a mapping with type one of"),
    ("scheduler", {"type": "asha", "grace_period": 0}, "scheduler.grace_period=0 must be"),
    ("scheduler", {"type": "asha", "patience": 3}, "unknown scheduler key(s) patience"),
    ("scheduler", "asha", "'scheduler' must be a mapping"),
])
def test_bad_search_or_scheduler_section_is_one_line(tmp_path, section, bad, message):
    path = _space(tmp_path, **{section: bad})
    with pytest.raises(ConfigError) as err:
        load_space(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    from zeroflow.cli import main

    assert main(["sweep", str(path), "--storage", str(tmp_path / "runs")]) == 2


def test_searched_space_draws_choices_and_applies_overrides_in_the_trial(tmp_path):
    """Searchers cannot resolve ``sample_from``: with one, grid keys become choices and the
    override rules travel with the config, applied by ``trial_config``."""
    from ray import tune

    from zeroflow.sweep import trial_config

    space = load_space(_space(
        tmp_path, overrides=[{"when": {"optimizer": "zo-sgd"}, "set": {"mu": 0.01}}]))
    assert space.n_trials == N_TRIALS and space.num_samples == N_TRIALS
    ps = space.param_space()
    assert isinstance(ps["optimizer"], tune.search.sample.Categorical)
    assert "mu" not in ps
    for optimizer, mu in (("zo-sgd", 0.01), ("fo-sgd", None)):
        config = trial_config({**{k: v for k, v in ps.items() if not hasattr(v, "sample")},
                               "optimizer": optimizer, "lr": 1e-3})
        assert config.get("mu") == mu and "zeroflow_overrides" not in config


def _runs(uri, name):
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], max_results=200)


@pytest.mark.ray
def test_optuna_asha_sweep_stops_trials_early_and_resumes_after_a_killed_driver(tmp_path):
    space = _space(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "zeroflow.cli"]
    storage = str(tmp_path / "runs")
    driver = subprocess.Popen(cmd + ["sweep", str(space), "--storage", storage], env=env,
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:  # kill the driver once three trials have ended and a fourth has begun
        deadline = time.time() + 400
        while time.time() < deadline and driver.poll() is None:
            time.sleep(0.5)
            trials = [r for r in _runs(uri, "searched")
                      if r.data.tags.get("zeroflow.role") == "trial"]
            if sum(r.info.status != "RUNNING" for r in trials) >= 3 and any(
                    r.info.status == "RUNNING" for r in trials):
                break
        assert driver.poll() is None, "the sweep ended before it could be killed"
        time.sleep(2.5)  # Tune saves its experiment state (searcher included) every 2 s
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()

    done = subprocess.run(cmd + ["resume", "searched", "--storage", storage], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"sweep searched: {N_TRIALS} trials, 0 errored" in done.stdout
    assert "best avg_accuracy" in done.stdout

    runs = _runs(uri, "searched")
    parents = [r for r in runs if r.data.tags.get("zeroflow.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("zeroflow.role") == "trial"]
    assert len(parents) == 1
    # a trial the searcher suggested after Tune's last state save is unknown to the resumed
    # sweep, which suggests again in its place: its run is ended as KILLED and tagged (it
    # happens when the kill lands before that save; Tune saves every 2 s, later under load)
    abandoned = [r for r in trials if "zeroflow.abandoned" in r.data.tags]
    assert len(abandoned) <= 2
    for run in abandoned:
        assert run.info.status != "RUNNING", "an abandoned run left open"
        assert "not in Tune's saved state" in run.data.tags["zeroflow.abandoned"]
    trials = [r for r in trials if "zeroflow.abandoned" not in r.data.tags]
    ids = [r.data.tags["zeroflow.trial_id"] for r in trials]
    assert len(ids) == len(set(ids)) == N_TRIALS, "a trial ran twice or went missing"
    stopped = [r for r in trials if "zeroflow.stopped_early" in r.data.tags]
    finished = [r for r in trials if r.info.status == "FINISHED"]
    assert stopped, "ASHA stopped no trial"
    assert len(stopped) + len(finished) == N_TRIALS
    for run in stopped:
        assert run.info.status == "KILLED"
        assert run.data.tags["zeroflow.stopped_early"].startswith("stopped by ASHA")
        assert "avg" not in run.data.metrics  # no final average over the tasks it reached
    for run in finished:
        steps = [m.step for m in mlflow.MlflowClient(uri).get_metric_history(
            run.info.run_id, "accuracy")]
        assert steps == [0, 1, 2, 3, 4]
        # its trainable tensors, as an artifact (logged live or by the resume's catch-up)
        names = [a.path for a in mlflow.MlflowClient(uri).list_artifacts(
            run.info.run_id, "checkpoint")]
        assert names == ["checkpoint/trial.pt"]
    # lr really came from the searcher: every trial has its own
    assert len({r.data.params["lr"] for r in trials}) == N_TRIALS

    from zeroflow.report import build_report

    kept = build_report(["searched"], uri).runset.runs
    assert {r.run_id for r in kept} == {r.info.run_id for r in finished}
    every = build_report(["searched"], uri, include_stopped=True).runset.runs
    assert len(every) == N_TRIALS
