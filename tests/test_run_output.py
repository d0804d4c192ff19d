"""``zeroflow run`` as a person sees it: a progress bar per task in a terminal (a real
pseudo-terminal here), plain lines without one; and the run's final trainable tensors kept as
an MLflow artifact that ``--resume-from`` and ``torch.load(weights_only=True)`` accept."""

import os
import pty
import subprocess
import sys

import mlflow
import pytest
import torch
from conftest import as_args, tiny_trial

from zeroflow.cli import main

ARGS = as_args(tiny_trial(method="ease", optimizer="zo-sgd", init_cls=4, increment=3, epochs=2,
                          limit_batches=3))


def _run_in(tty: bool) -> str:
    cmd = [sys.executable, "-m", "zeroflow.cli", "run", *ARGS, "--no-track"]
    if not tty:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300).stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=300) == 0, out.decode()[-2000:]
    return out.decode()


def test_run_shows_a_bar_per_task_in_a_terminal_and_plain_lines_otherwise():
    terminal = _run_in(tty=True)
    for t in (1, 2, 3):  # 3 tasks: 4 + 3 + 3 classes
        assert f"task {t}/3: 100%" in terminal  # each task's bar ran to its end
    assert "step/s" in terminal or "s/step" in terminal
    assert "loss " in terminal and "epoch 2/2" in terminal

    plain = _run_in(tty=False)
    assert "\r" not in plain and "%|" not in plain
    lines = plain.splitlines()
    assert sum(ln.startswith("task ") and " epoch " in ln for ln in lines) == 6  # 3 tasks × 2


def test_run_keeps_its_final_checkpoint_as_an_artifact_that_resumes(capsys, tmp_path):
    assert main(["run", *ARGS]) == 0
    out = capsys.readouterr().out
    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("zeroflow-run").experiment_id])
    assert run.info.run_id in out
    folder = client.download_artifacts(run.info.run_id, "checkpoint", str(tmp_path))
    payload = torch.load(os.path.join(folder, "trial.pt"), weights_only=True)
    assert payload["task"] == 2 and payload["learner"]  # the last task's trainable tensors
    # resuming from it has nothing left to train and reports the same numbers
    assert main(["run", *ARGS, "--resume-from", folder, "--no-track"]) == 0
    again = capsys.readouterr().out
    for line in out.splitlines():
        if line.startswith(("avg accuracy", "last accuracy", "forgetting")):
            assert line in again


def test_run_help_lists_every_config_key_with_its_default_and_a_line_of_help(capsys):
    from zeroflow.config import TrialConfig
    from zeroflow.key_help import KEY_HELP

    assert set(KEY_HELP) == set(TrialConfig.keys()), "every key needs one line of help"
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    listed = text.split("config keys")[1].splitlines()[1:]
    for key in TrialConfig.keys():
        rows = [i for i, line in enumerate(listed) if line.startswith(f"  {key} ")]
        assert len(rows) == 1, key
        default = TrialConfig.__dataclass_fields__[key].default
        assert f"default {'none' if default is None else default}" in listed[rows[0]], key
        assert listed[rows[0] + 1].strip() == KEY_HELP[key]
    assert "default 1; >= 1" in text  # q's range, from the field's metadata
    assert "momentum            float, default 0.9; [0.0, 1.0)" in text
