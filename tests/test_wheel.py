"""The built wheel works without the repository: installed (not editable) into a fresh virtual
environment, it lists and dry-runs a shipped space by name and runs one short trial from a
folder outside the checkout. The environment borrows this one's dependencies (a .pth line), so
nothing is downloaded; zeroflow itself comes from the wheel only."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the wheel, not a checkout
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, **kwargs)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


@pytest.mark.slow
def test_installed_wheel_runs_a_shipped_space_and_a_trial_outside_the_repo(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
          "-q", "-w", str(dist)])
    wheel, = dist.glob("zeroflow-*.whl")
    env_dir = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(env_dir)])
    py = env_dir / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                     ).stdout.strip())
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])

    away = tmp_path / "elsewhere"
    away.mkdir()
    where = _run([str(py), "-c", "import zeroflow; print(zeroflow.__file__)"], cwd=away)
    assert where.stdout.strip().startswith(str(site)), where.stdout  # the wheel, not the repo
    zeroflow = str(env_dir / "bin" / "zeroflow")
    listed = _run([zeroflow, "sweep", "--list"], cwd=away).stdout
    assert "quickstart" in listed and "table1" in listed
    dry = _run([zeroflow, "sweep", "quickstart", "--dry-run"], cwd=away).stdout
    assert dry.startswith("sweep quickstart: 40 trials, 2 at a time")
    trial = _run([zeroflow, "run", "dataset=digits", "method=ease", "optimizer=zo-sgd",
                  "epochs=1", "limit_batches=2", "samples_per_class=20", "--no-track"],
                 cwd=away).stdout
    assert "avg accuracy" in trial and "forward passes 20 in 10 steps" in trial, trial
    assert not (away / "mlflow.db").exists()
