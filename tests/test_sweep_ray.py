"""Ray Tune sweeps end to end: MLflow runs, retries from task checkpoints, and the UI in a real
browser. One Ray session (conftest's ``ray_session``) is shared by the module; its workers
carry the fault-injection hook below."""

import os
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest
from conftest import tiny_trial

from zeroflow.cli import main
from zeroflow.config import make_config
from zeroflow.errors import ConfigError
from zeroflow.sweep import run_sweep, trial_config
from zeroflow.trial import run_trial

pytestmark = pytest.mark.ray

BASE = tiny_trial(init_cls=4, increment=3, epochs=2, limit_batches=2)


FAULT_ENV = "ZEROFLOW_TEST_FAULT"  # a file holding "raise|kill:<task>:<marker>", or nothing


class Payload:
    """Unpickling this creates the file ``target``: what a planted checkpoint could do."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.target),))


def _poison_newest_checkpoint(target: str) -> None:
    """Replace the trial's newest checkpoint in storage by a pickle that runs code, its marker
    kept consistent (as someone who replaced it on purpose would)."""
    import json
    from pathlib import Path

    import torch
    from ray import tune

    from zeroflow.sweep import checkpoints

    storage = tune.get_context().get_storage()
    newest = checkpoints.newest(storage.storage_filesystem, storage.trial_fs_path)
    folder = Path(newest.path)
    torch.save({"version": 2, "task": 0, "config": {}, "hook": Payload(target)},
               folder / "trial.pt")
    marker = json.loads((folder / checkpoints.MARKER).read_text())
    marker["bytes"] = (folder / "trial.pt").stat().st_size
    (folder / checkpoints.MARKER).write_text(json.dumps(marker))


def _install_fault() -> None:
    """Ray's worker_process_setup_hook: in every trial process, wrap ``run_trial`` so that a
    trial dies once (raises, SIGKILLs its process, or poisons its newest checkpoint and raises)
    at the start of task <task>'s second epoch, as the file named by ``$ZEROFLOW_TEST_FAULT``
    says; the marker file makes it once. The fault is an observer of the loop; a test hook
    lives here, not in the trainable."""
    import signal
    from pathlib import Path

    import zeroflow.trial
    from zeroflow.observers import Observer

    real = zeroflow.trial.run_trial

    def maybe_fault(task: int) -> None:
        spec_file = os.environ.get(FAULT_ENV, "")
        spec = Path(spec_file).read_text().strip() if os.path.exists(spec_file) else ""
        if not spec:
            return
        kind, at, marker = spec.split(":", 2)
        if int(at) != task or os.path.exists(marker):
            return
        Path(marker).write_text(kind)
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "poison":
            _poison_newest_checkpoint(marker + ".payload_ran")
        raise RuntimeError(f"injected fault in task {task}")

    class Fault(Observer):
        def before_epoch(self, state, epoch: int) -> None:
            if epoch == 1:
                maybe_fault(state.task)

    def run_trial(config, reporter=None, *, observers=(), **kwargs):
        return real(config, reporter, observers=[*observers, Fault()], **kwargs)

    zeroflow.trial.run_trial = run_trial


@pytest.fixture(scope="module")
def fault_spec(tmp_path_factory):
    """The file the fault hook reads: ``raise|kill:<task>:<marker>``, or nothing."""
    return tmp_path_factory.mktemp("fault") / "spec"


@pytest.fixture(scope="module")
def ray_runtime_env(fault_spec):
    """This module's Ray workers install the fault hook (conftest's ``ray_session`` uses it)."""
    from ray import cloudpickle  # the hook travels by value: workers cannot import this module

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return {"worker_process_setup_hook": _install_fault, "env_vars": {FAULT_ENV: str(fault_spec)}}


def space_file(tmp_path, name, grid, run="{max_failures: 2, max_concurrent: 2}", **sections):
    import yaml

    text = yaml.safe_dump({"name": name, "base": BASE, "grid": grid, **sections,
                           "resources": {"cpu": 1}}, sort_keys=False) + f"run: {run}\n"
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def runs_of(uri, experiment):
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("zeroflow.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("zeroflow.role") == "trial"]
    return client, parents, children


def test_four_trial_sweep_logs_parent_and_children(ray_session, tmp_path, capsys):
    """Also: an override rule and a sampler reach the trials Ray runs, and launching the same
    sweep again is refused in one line."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = space_file(tmp_path, "four", {"optimizer": ["fo-sgd", "zo-sgd"],
                                         "method": ["ease", "zofc"]},
                      sample={"momentum": {"uniform": [0.5, 0.8]}},
                      overrides=[{"when": {"optimizer": "zo-sgd"},
                                  "set": {"mu": 0.004, "track_task_losses": 3}}])
    results, space = run_sweep(path, storage=tmp_path / "runs", tracking_uri=uri, verbose=0)
    assert results.num_errors == 0 and len(results) == 4
    client, parents, children = runs_of(uri, "four")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0].info.run_id
    assert parents[0].info.status == "FINISHED"
    names = sorted(r.info.run_name for r in children)
    assert [n.rsplit(" · momentum ", 1)[0] for n in names] == [
        "ease · fo-sgd", "ease · zo-sgd", "zofc · fo-sgd", "zofc · zo-sgd"]
    momenta = {float(r.data.params["momentum"]) for r in children}
    assert len(momenta) == 4 and all(0.5 <= m <= 0.8 for m in momenta)
    for result in results:  # what each trial process was handed, as Ray resolved it
        assert result.config["mu"] == (0.004 if result.config["optimizer"] == "zo-sgd" else
                                       0.001)
        assert 0.5 <= result.config["momentum"] <= 0.8
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent
        params = run.data.params
        assert params["dataset"] == "digits" and params["increment"] == "3"
        assert params["optimizer"] in ("fo-sgd", "zo-sgd") and "lr" in params
        assert float(params["mu"]) == (0.004 if params["optimizer"] == "zo-sgd" else 0.001)
        metrics = run.data.metrics
        noise = [k for k in metrics if k.startswith(("config", "pid", "time_this", "timestamp",
                                                     "training_iteration", "date"))]
        assert not noise
        for key in ("accuracy", "forgetting", "peak_memory_mb", "forward_passes",
                    "time_task_s", "accuracy_task_0", "accuracy_task_2"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == sorted(set(steps)), key  # no task logged twice
            assert steps[-1] == 2, key
        assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")] == [0, 1, 2]
        assert {"avg", "last", "forgetting"} <= set(metrics)
        # step-level probes reach MLflow through Ray and the driver's callback: 4 steps per
        # task (2 epochs x 2 batches), a probe every 3rd global step, task j probed from its start
        for j in range(3):
            steps = [m.step for m in client.get_metric_history(run.info.run_id,
                                                               f"task_loss_{j}")]
            probed = params["optimizer"] == "zo-sgd"
            assert steps == ([s for s in (3, 6, 9, 12) if s > 4 * j] if probed else []), j
        assert metrics["last"] == metrics["accuracy"]
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert arts == {"accuracy_matrix.csv", "accuracy_curve.png", "config.yaml", "checkpoint"}
    # the browser test below reads this store
    pytest.shared_uri = uri
    pytest.shared_names = names

    with pytest.raises(ConfigError, match="a sweep named 'four' already exists"):
        run_sweep(path, storage=tmp_path / "runs", tracking_uri=uri, verbose=0)
    code = main(["sweep", str(path), "--storage", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "zeroflow resume four" in err[0]
    assert len(runs_of(uri, "four")[2]) == 4  # nothing new was started or logged


def test_status_lines_match_rays_own_trial_states(ray_session, tmp_path, capsys):
    """A 4-trial sweep, 2 at a time: at every status line, its running and done counts equal
    Ray's trial states at that moment (a trial whose end Tune has announced counts as ended:
    Tune reports the end before it changes the status). And ``--dry-run --format json``
    printed, before, exactly the configs the sweep then ran, override rules applied."""
    import io
    import json
    import re

    from ray import tune

    from zeroflow.sweep.progress import ProgressLine

    class Witness(tune.Callback):
        """Ray's view, kept apart from the status lines' own bookkeeping."""

        def __init__(self):
            self.ended, self.peak = set(), 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ended.add(trial.trial_id)

        on_trial_error = on_trial_complete

        def on_step_end(self, iteration, trials, **info):
            self.peak = max(self.peak, sum(t.status == "RUNNING" for t in trials))

    witness, seen = Witness(), []

    class Recorded(ProgressLine):
        def print_line(self, trials, ending=None):
            running = sum(t.status == "RUNNING" and t.trial_id not in witness.ended
                          for t in trials)
            done = sum(t.trial_id in witness.ended for t in trials)
            seen.append((running, done, self.line(trials, ending)))
            super().print_line(trials, ending)

    out = io.StringIO()
    path = space_file(tmp_path, "lines", {"optimizer": ["fo-sgd", "zo-sgd"],
                                          "method": ["ease", "finetune"]},
                      overrides=[{"when": {"optimizer": "zo-sgd", "method": "finetune"},
                                  "set": {"mu": 0.004, "lr": 0.02}}])
    assert main(["sweep", str(path), "--dry-run", "--format", "json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    results, _ = run_sweep(path, storage=tmp_path / "runs", verbose=0,
                           callbacks=[witness, Recorded(4, ["optimizer", "method"], every=0.0,
                                                        stream=out)])
    assert results.num_errors == 0 and len(results) == 4
    assert len(seen) >= 4 and seen[-1][1] == 4
    for running, done, line in seen:
        counted = re.search(r"\] (\d+)/4 done · (\d+) running", line)
        assert (int(counted.group(2)), int(counted.group(1))) == (running, done), line
    assert witness.peak == 2, "the sweep never ran two trials at a time: nothing tested"
    assert out.getvalue().count("\n") == len(seen)
    ran = [make_config(trial_config(r.config)).to_dict() for r in results]
    key = lambda c: json.dumps(c, sort_keys=True)  # noqa: E731
    assert sorted(planned, key=key) == sorted(ran, key=key)
    assert sum(c["mu"] == 0.004 and c["lr"] == 0.02 for c in planned) == 1


@pytest.mark.parametrize("kind", ["raise", "kill"])
def test_trial_dying_mid_task_is_retried_from_its_checkpoint(ray_session, fault_spec, tmp_path,
                                                             kind):
    marker = tmp_path / "died"
    fault_spec.write_text(f"{kind}:1:{marker}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = space_file(tmp_path, f"fault_{kind}", {"optimizer": ["zo-sgd"], "method": ["ease"]})
    try:
        results, _ = run_sweep(path, storage=tmp_path / "runs", tracking_uri=uri, verbose=0)
    finally:
        fault_spec.write_text("")
    assert marker.exists(), "the fault was not injected"
    assert results.num_errors == 0
    # the retry continued from task 0's checkpoint: each later task reported once, by an
    # attempt that started at task 1 (one that ignored the checkpoint would start at 0; Ray
    # may drop the killed attempt's rows from its result log, so task 0's row is not checked)
    progress = results[0].metrics_dataframe
    retried = progress[progress["task"] >= 1]
    assert list(retried["task"]) == [1, 2]
    assert list(retried["start_task"]) == [1, 1]
    assert results[0].metrics["start_task"] == 1
    client, parents, children = runs_of(uri, f"fault_{kind}")
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(children[0].info.run_id, "accuracy")]
    assert steps == [0, 1, 2]
    straight = run_trial({**BASE, "optimizer": "zo-sgd", "method": "ease"})
    m = children[0].data.metrics
    assert m["avg"] == straight.summary["avg"]
    assert m["last"] == straight.summary["last"]
    assert m["forgetting"] == straight.summary["forgetting"]
    assert m["forward_passes"] == straight.summary["forward_passes"]


def test_an_unsafe_checkpoint_ends_its_trial_once_naming_where_it_lives(ray_session, fault_spec,
                                                                         tmp_path, capsys):
    """A trial's newest checkpoint in storage replaced by a pickle that runs code: the retried
    trial refuses it without running it, names its real place in the storage (not a temporary
    copy), and ends once, FAILED, with that one line (no retries of a mistake)."""
    marker = tmp_path / "died"
    fault_spec.write_text(f"poison:1:{marker}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = space_file(tmp_path, "poisoned", {"optimizer": ["zo-sgd"], "method": ["ease"]})
    try:
        code = main(["sweep", str(path), "--storage", str(tmp_path / "runs")])
    finally:
        fault_spec.write_text("")
    out, err = capsys.readouterr()
    assert marker.exists(), "the fault was not injected"
    assert not (tmp_path / "died.payload_ran").exists(), "the planted checkpoint ran code"
    assert code == 1 and "sweep poisoned: 1 trials, 1 errored" in out, out[-3000:]
    where = [ln for ln in (out + err).splitlines() if "cannot be loaded safely" in ln]
    assert len(where) == 1, out + err
    folder = tmp_path / "runs" / "poisoned"
    assert f"checkpoint {folder}/" in where[0] and "/checkpoint_000000/trial.pt " in where[0]
    assert "zf_restore_" not in where[0]
    _, _, children = runs_of(uri, "poisoned")
    assert len(children) == 1 and children[0].info.status == "FAILED"
    assert "cannot be loaded safely" in children[0].data.tags["zeroflow.error"]


@pytest.mark.browser
def test_mlflow_ui_in_a_real_browser_lists_the_sweep_runs(headless_browser, free_port):
    browser = headless_browser
    uri = getattr(pytest, "shared_uri", None)
    if uri is None:
        pytest.skip("needs the four-trial sweep of this module to have run")
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    ui = subprocess.Popen([sys.executable, "-m", "zeroflow.cli", "ui", "--port", str(port)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
    try:
        first = ui.stdout.readline()
        assert f"http://127.0.0.1:{port}" in first
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the MLflow UI did not answer within 120 s")
        exp = mlflow.tracking.MlflowClient(uri).get_experiment_by_name("four")
        browser.set_window_size(1400, 1000)
        browser.get(f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs")
        deadline = time.time() + 60
        found, expanded = set(), False
        while time.time() < deadline and len(found) < len(pytest.shared_names):
            time.sleep(1)
            text = browser.find_element("tag name", "body").text
            found = {n for n in pytest.shared_names if n in text}
            expanders = browser.find_elements(
                "css selector", "button[data-component-id*='runnamecellrenderer']")
            if not expanded and expanders:  # trial runs nest under the sweep's run
                expanders[0].click()
                expanded = True
        assert found == set(pytest.shared_names), browser.find_element(
            "tag name", "body").text[:2000]
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)
