"""``zeroflow ui``: says what it starts at once, prints its URL only once the port answers, runs
one light server (no job consumers), and leaves no process behind on SIGTERM."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.ray  # a real MLflow server: slow to start on two cores


def _processes_naming(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if text in ln and not ln.lstrip().startswith("Z")]


def test_ui_prints_its_url_when_it_answers_and_stops_whole_on_sigterm(tmp_path, free_port):
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "zeroflow.cli", "ui", "--port", str(port)],
                          cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ})
    try:
        first = ui.stderr.readline()
        assert first.startswith("zeroflow: starting the MLflow UI for sqlite:///")
        ready = ui.stdout.readline()  # printed only once /health answers
        assert ready.startswith(f"MLflow UI at http://127.0.0.1:{port}"), ready
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
            assert resp.status == 200
        server = _processes_naming(f"--port {port}")
        assert len(server) <= 2, server  # mlflow's launcher and one uvicorn worker
        assert not _processes_naming("huey"), "MLflow's job consumers must not run"
    finally:
        ui.send_signal(signal.SIGTERM)  # to zeroflow only, as `kill PID` does
        assert ui.wait(timeout=60) == 0
    deadline = time.time() + 10
    while _processes_naming(f"--port {port}") and time.time() < deadline:
        time.sleep(0.5)
    assert _processes_naming(f"--port {port}") == []
