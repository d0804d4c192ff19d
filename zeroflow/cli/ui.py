"""``zeroflow ui``: the MLflow UI over this project's runs, as one server process stopped
whole on Ctrl-C or SIGTERM."""

from __future__ import annotations

import sys

from zeroflow.cli.output import say


def cmd_ui(args) -> int:
    """The MLflow UI over this project's store: one server process (no job consumers, one
    worker), its URL printed once it answers, and every process of it stopped on Ctrl-C or
    SIGTERM."""
    import os
    import signal
    import subprocess

    from zeroflow.tracking import default_tracking_uri

    uri = default_tracking_uri()
    url = f"http://127.0.0.1:{args.port}"
    say(f"starting the MLflow UI for {uri} on {url}")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--registry-store-uri", uri, "--host", "127.0.0.1", "--port", str(args.port),
           "--workers", "1",
           "--uvicorn-opts", "--log-level warning"]  # not a line per request
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    # the server's own chatter goes to stderr: stdout carries the URL line only
    server = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=sys.stderr)

    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        if _wait_for_http(f"{url}/health", server):
            print(f"MLflow UI at {url}  (store {uri}; Ctrl-C stops it)", flush=True)
            newest = _newest_experiment(uri)
            if newest is not None:  # MLflow 3 opens in its GenAI view unless the URL says
                print(f"newest sweep, {newest[1]!r}, in the model-training view: {url}/#/"
                      f"experiments/{newest[0]}/runs?workflowType=machine_learning", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_session(server)


def _newest_experiment(uri: str) -> tuple[str, str] | None:
    """(id, name) of the store's most recently updated experiment, None if it has none."""
    try:
        from mlflow import MlflowClient

        found = MlflowClient(uri).search_experiments(  # MLflow's own empty "Default" aside
            max_results=1, filter_string="name != 'Default'",
            order_by=["last_update_time DESC"])
    except Exception:  # noqa: BLE001 - the link is a convenience; the UI is up regardless
        return None
    return (found[0].experiment_id, found[0].name) if found else None


def _wait_for_http(url: str, process, timeout: float = 180.0) -> bool:
    """Whether ``url`` answered before ``process`` ended or ``timeout`` seconds passed."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _stop_session(process, grace: float = 10.0) -> None:
    """SIGTERM every process of ``process``'s session (it was started in a new one), then
    SIGKILL what is left after ``grace`` seconds."""
    import os
    import signal
    import time

    def alive() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = open(f"/proc/{entry}/stat").read()
                except OSError:
                    continue
                fields = stat[stat.rindex(")") + 2:].split()
                if fields[0] != "Z" and int(fields[3]) == process.pid:
                    pids.append(int(entry))
        return pids

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            process.poll()  # reap the server itself
            time.sleep(0.2)
    process.poll()
