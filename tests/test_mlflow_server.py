"""One MLflow server for a cluster (``cluster/mlflow-server.sh``): a real PostgreSQL started in a
temporary data directory by the script, ``mlflow server`` on it with proxied artifacts and basic
authentication, and a 2-trial sweep logging to it with the credentials ``up`` exports."""

import base64
import glob
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
import yaml

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster" / "mlflow-server.sh"
BIN = Path(sys.executable).parent
EXPORTS = ["MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]


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


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _http(url: str, user: str | None = None, password: str | None = None, method: str = "GET",
          body: bytes | None = None) -> int:
    """The HTTP status of one request, with basic-auth credentials when given."""
    req = urllib.request.Request(url, data=body, method=method)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", "Basic " + token)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture()
def start_server(free_port):
    """``start(*args)`` runs ``mlflow-server.sh up *args`` in a fresh state folder and returns
    (state, env, up); at teardown every started server is taken down and no process may be
    left."""
    missing = _postgres_missing()
    if missing:
        pytest.skip(missing)
    started = []

    def start(*args):
        if "--no-auth" not in args and importlib.util.find_spec("flask_wtf") is None:
            pytest.skip("Flask-WTF (MLflow's basic-auth app) is not installed "
                        "(pip install -e '.[cluster]')")
        state = Path(tempfile.mkdtemp(prefix="zf_mlflow_"))
        env = {**os.environ, "ZEROFLOW_MLFLOW_DIR": str(state), "PYTHON": sys.executable,
               "ZEROFLOW_MLFLOW_BIN": str(BIN / "mlflow"), "ZEROFLOW_PG_PORT": str(free_port()),
               "ZEROFLOW_MLFLOW_PORT": str(free_port()), "ZEROFLOW_MLFLOW_WORKERS": "1"}
        for name in [*EXPORTS, "RAY_ADDRESS"]:
            env.pop(name, None)
        started.append((state, env))
        up = subprocess.run(["bash", str(SCRIPT), "up", *args], capture_output=True, text=True,
                            env=env, timeout=300)
        if up.returncode != 0 and "initdb failed" in up.stderr:
            pytest.skip("PostgreSQL cannot run here: " + up.stderr.strip().splitlines()[-1])
        assert up.returncode == 0, up.stderr[-3000:]
        return state, env, up

    try:
        yield start
    finally:
        for state, env in started:
            down = subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True,
                                  env=env, timeout=120)
            assert down.returncode == 0, down.stderr
            left = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True)
            alive = [ln for ln in left.stdout.splitlines()
                     if str(state) in ln and not ln.lstrip().startswith("Z")]
            assert alive == [], f"processes left behind: {alive}"
            shutil.rmtree(state, ignore_errors=True)


def _status(env) -> str:
    out = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_two_trial_sweep_logs_to_mlflow_server_on_postgresql(start_server, tmp_path,
                                                           monkeypatch):
    state, env, up = start_server()
    # `up` prints three export lines and nothing else: eval "$(... up)" sets the client's
    # URI and basic-auth credentials
    lines = up.stdout.splitlines()
    assert [ln.split("=", 1)[0] for ln in lines] == [f"export {name}" for name in EXPORTS]
    exports = dict(re.fullmatch(r"export (\w+)=(\S+)", ln).groups() for ln in lines)
    uri, user, password = (exports[name] for name in EXPORTS)
    assert uri.startswith("http://127.0.0.1:")
    assert "authentication on" in _status(env)

    # the generated admin password sits in an owner-only file; so do the other secrets and the
    # auth database; the state folder lists nothing to others
    secret = state / "mlflow_admin_password"
    assert secret.read_text().strip() == password and len(password) >= 32
    for name in ["mlflow_admin_password", "flask_secret_key", "pg_password", "basic_auth.ini",
                 "basic_auth.db"]:
        assert _mode(state / name) == 0o600, name
    assert _mode(state) & 0o066 == 0 and _mode(state / "artifacts") == 0o700

    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=10"
    assert _http(search) == 401
    assert _http(search, user, password + "x") == 401
    assert _http(search, "nobody", password) == 401
    assert _http(search, user, password) == 200

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
        env={**env, **exports})
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists(), "the driver must not fall back to SQLite"

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
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
    stored = list((state / "artifacts").rglob("accuracy_matrix.csv"))
    assert stored
    # the server wrote its artifacts owner-only (it runs with umask 077)
    written = list((state / "artifacts").rglob("*"))
    assert written and [str(p) for p in written if _mode(p) & 0o077] == []

    # without credentials the artifact proxy refuses reads and uploads (a replaced file would
    # be a replaced checkpoint), and the API refuses a tag
    run = trials[0]
    proxied = (f"{uri}/api/2.0/mlflow-artifacts/artifacts/"
               f"{urlparse(run.info.artifact_uri).path.lstrip('/')}/accuracy_matrix.csv")
    original = {p: p.read_bytes() for p in stored}
    assert _http(proxied) == 401
    assert _http(proxied, method="PUT", body=b"forged") == 401
    set_tag = f"{uri}/api/2.0/mlflow/runs/set-tag"
    tag = json.dumps({"run_id": run.info.run_id, "key": "forged", "value": "1"}).encode()
    assert _http(set_tag, method="POST", body=tag) == 401
    assert _http(set_tag, user, "wrong", method="POST", body=tag) == 401

    # a user without a grant can neither read nor change the admin's runs
    # (default_permission = NO_PERMISSIONS)
    other = json.dumps({"username": "reader", "password": "reader-password-1234"}).encode()
    assert _http(f"{uri}/api/2.0/mlflow/users/create", user, password, "POST", other) == 200
    reader = ("reader", "reader-password-1234")
    assert _http(f"{uri}/api/2.0/mlflow/runs/get?run_id={run.info.run_id}", *reader) == 403
    assert _http(proxied, *reader) == 403
    assert _http(proxied, *reader, method="PUT", body=b"forged") == 403
    assert _http(set_tag, *reader, method="POST", body=tag) == 403
    assert {p: p.read_bytes() for p in stored} == original
    assert "forged" not in client.get_run(run.info.run_id).data.tags

    # the runs live in PostgreSQL, not in some fallback store
    import psycopg

    pg_password = (state / "pg_password").read_text().strip()
    with psycopg.connect(host="127.0.0.1", port=int(env["ZEROFLOW_PG_PORT"]), user="zeroflow",
                         password=pg_password, dbname="mlflow") as conn:
        count, = conn.execute("SELECT count(*) FROM runs WHERE experiment_id = %s",
                              (int(exp.experiment_id),)).fetchone()
    assert count == 3


def test_no_auth_is_a_flag_that_warns(start_server):
    state, env, up = start_server("--no-auth")
    line, = up.stdout.splitlines()
    assert line.startswith("export MLFLOW_TRACKING_URI=http://127.0.0.1:")
    uri = line.split("=", 1)[1]
    warning, = [ln for ln in up.stderr.splitlines() if "warning" in ln]
    assert "authentication is off" in warning and "anyone who reaches" in warning
    assert _http(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1") == 200
    assert "authentication OFF" in _status(env)


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
