"""One MLflow server for a cluster (``cluster/mlflow-server.sh``): a real PostgreSQL started in a
temporary data directory by the script, ``mlflow server`` on it with proxied artifacts, and a
2-trial sweep logging to it through ``MLFLOW_TRACKING_URI``."""

import glob
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest
import yaml

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster" / "mlflow-server.sh"
BIN = Path(sys.executable).parent


def _postgres_missing() -> str | None:
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl") and not shutil.which("pg_ctl"):
        return "PostgreSQL is not installed (Debian: apt-get install postgresql)"
    if os.geteuid() == 0:
        if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[cluster]')"
    return None


@pytest.fixture()
def server(free_port):
    missing = _postgres_missing()
    if missing:
        pytest.skip(missing)
    state = Path(tempfile.mkdtemp(prefix="zf_mlflow_"))
    env = {**os.environ, "ZEROFLOW_MLFLOW_DIR": str(state), "PYTHON": sys.executable,
           "ZEROFLOW_MLFLOW_BIN": str(BIN / "mlflow"), "ZEROFLOW_PG_PORT": str(free_port()),
           "ZEROFLOW_MLFLOW_PORT": str(free_port()), "ZEROFLOW_MLFLOW_WORKERS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, env=env,
                        timeout=300)
    try:
        if up.returncode != 0 and "initdb failed" in up.stderr:
            pytest.skip("PostgreSQL cannot run here: " + up.stderr.strip().splitlines()[-1])
        assert up.returncode == 0, up.stderr[-3000:]
        line, = up.stdout.splitlines()
        assert line.startswith("export MLFLOW_TRACKING_URI=http://127.0.0.1:")
        yield state, env, line.split("=", 1)[1]
    finally:
        down = subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True,
                              env=env, timeout=120)
        assert down.returncode == 0, down.stderr
        left = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True)
        alive = [ln for ln in left.stdout.splitlines()
                 if str(state) in ln and not ln.lstrip().startswith("Z")]
        assert alive == [], f"processes left behind: {alive}"
        shutil.rmtree(state, ignore_errors=True)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_two_trial_sweep_logs_to_mlflow_server_on_postgresql(server, tmp_path):
    state, env, uri = server
    space = tmp_path / "pg_sweep.yaml"
    space.write_text(yaml.safe_dump({
        "name": "pg_sweep",
        "base": {"dataset": "digits", "method": "ease", "epochs": 1, "init_cls": 4,
                 "increment": 3, "batch_size": 16, "limit_batches": 2, "samples_per_class": 20},
        "grid": {"optimizer": ["fo-sgd", "zo-sgd"]},
        "resources": {"cpu": 1},
        "run": {"max_failures": 1, "max_concurrent": 2}}, sort_keys=False))
    sweep = subprocess.run(
        [sys.executable, "-m", "zeroflow.cli", "sweep", str(space), "--storage",
         str(tmp_path / "runs")], capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**env, "MLFLOW_TRACKING_URI": uri})
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists(), "the driver must not fall back to SQLite"

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("pg_sweep")
    runs = client.search_runs([exp.experiment_id])
    trials = [r for r in runs if r.data.tags.get("zeroflow.role") == "trial"]
    parents = [r for r in runs if r.data.tags.get("zeroflow.role") == "sweep"]
    assert len(parents) == 1 and len(trials) == 2
    assert {r.data.params["optimizer"] for r in trials} == {"fo-sgd", "zo-sgd"}
    for run in trials:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert 0 < run.data.metrics["avg"] <= 100
        assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")] == [0, 1, 2]
        # artifacts go through the server (proxied) into its artifact destination
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        matrix = Path(client.download_artifacts(run.info.run_id, "accuracy_matrix.csv",
                                                str(tmp_path)))
        assert len(matrix.read_text().strip().splitlines()) == 4  # header + 3 tasks
    assert list((state / "artifacts").rglob("accuracy_matrix.csv"))
    # the server wrote its artifacts owner-only (it runs with umask 077); the state folder
    # lists nothing to others and its secrets are 0600
    written = list((state / "artifacts").rglob("*"))
    assert written and [str(p) for p in written if _mode(p) & 0o077] == []
    assert _mode(state) & 0o066 == 0 and _mode(state / "artifacts") == 0o700
    assert _mode(state / "pg_password") == 0o600

    # the runs live in PostgreSQL, not in some fallback store
    import psycopg

    password = (state / "pg_password").read_text().strip()
    with psycopg.connect(host="127.0.0.1", port=int(env["ZEROFLOW_PG_PORT"]), user="zeroflow",
                         password=password, dbname="mlflow") as conn:
        count, = conn.execute("SELECT count(*) FROM runs WHERE experiment_id = %s",
                              (int(exp.experiment_id),)).fetchone()
    assert count == 3


def test_state_folder_the_postgres_user_cannot_reach_is_named():
    if os.geteuid() != 0:
        pytest.skip("only root runs PostgreSQL as another user (postgres)")
    if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        pytest.skip("there is no 'postgres' user")
    parent = Path(tempfile.mkdtemp(prefix="zf_private_"))  # mkdtemp makes it 0700
    try:
        assert _mode(parent) == 0o700
        state = parent / "mlflow"
        env = {**os.environ, "ZEROFLOW_MLFLOW_DIR": str(state), "PYTHON": sys.executable,
               "ZEROFLOW_MLFLOW_BIN": str(BIN / "mlflow")}
        env.pop("ZEROFLOW_MLFLOW_BACKEND", None)
        up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True,
                            env=env, timeout=60)
        assert up.returncode == 1 and up.stdout == ""
        error, = up.stderr.splitlines()
        assert f"{parent} (mode 700, owner root)" in error
        assert f"chmod o+x {parent}" in error and "ZEROFLOW_MLFLOW_DIR" in error
        assert not state.exists()  # refused before anything was made or started
    finally:
        shutil.rmtree(parent)
