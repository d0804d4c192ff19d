"""Screenshots for docs/ui.md, taken in headless Chromium: a sweep's summary as the terminal
shows it, its report, and the MLflow UI comparing its optimizers.

    python tools/screenshots.py                      # runs the quickstart (minutes), then shoots
    python tools/screenshots.py --workdir DIR --reuse  # shoots a sweep already run in DIR

Needs the project installed with its test extra (selenium) and Debian's chromium and
chromium-driver. Writes PNGs into ``docs/images/`` (``--out``); the sweep, its MLflow store and
report stay in ``--workdir`` (a temporary folder by default).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "zeroflow.cli"]
TERMINAL = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>
body{margin:0;background:#1e1e1e}pre{margin:0;padding:16px;color:#ddd;
font:13px/1.35 'DejaVu Sans Mono',monospace;white-space:pre}</style></head>
<body><pre>%s</pre></body></html>"""


def browser(profile: Path):
    from selenium import webdriver

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        sys.exit("screenshots: needs chromium and chromedriver (Debian: apt-get install "
                 "chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--hide-scrollbars",
                 f"--user-data-dir={profile}", "--window-size=1400,900"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options,
                            service=webdriver.ChromeService(executable_path=driver))


def tidy_mlflow(page) -> None:
    """The runs page as a user comparing optimizers wants it: the assistant panel closed, the
    sweep's run expanded into its trials."""
    def click(selector: str) -> None:
        for button in page.find_elements("css selector", selector):
            try:
                button.click()
                time.sleep(1)
            except Exception:  # noqa: BLE001 - a panel already closed
                pass

    click('[data-component-id="mlflow.assistant.chat_panel.close"]')
    if " · " not in page.find_element("tag name", "body").text:  # the trials are hidden
        click('[data-component-id$="runnamecellrenderer.tsx_46"]')


def shoot(page, url: str, path: Path, wait_for: str | None = None, height: int | None = None,
          settle: float = 1.0, prepare=None) -> Path:
    """Open ``url``, (``prepare`` it,) wait until the page shows ``wait_for`` (text), size the
    window to the page (or ``height``) and save a PNG."""
    page.set_window_size(1400, 900)
    page.get(url)
    deadline = time.time() + 120
    if prepare is not None:
        time.sleep(settle * 3)  # the app's first render
        prepare(page)
    while wait_for and wait_for not in page.find_element("tag name", "body").text:
        if time.time() > deadline:
            page.save_screenshot(str(path.with_suffix(".failed.png")))
            raise SystemExit(f"screenshots: {url} never showed {wait_for!r} (what it showed: "
                             f"{path.with_suffix('.failed.png')})")
        time.sleep(0.5)
    time.sleep(settle)  # charts and fonts finish drawing
    full = page.execute_script("return document.documentElement.scrollHeight")
    page.set_window_size(1400, min(height or full, 4000))
    time.sleep(0.3)
    page.save_screenshot(str(path))
    print(f"wrote {path}")
    return path


def run_sweep(space: str, work: Path, env: dict) -> str:
    """The sweep's terminal output (stdout, then the status lines of stderr)."""
    done = subprocess.run(CLI + ["sweep", space, "--storage", str(work / "runs")], cwd=work,
                          env=env, capture_output=True, text=True)
    (work / "sweep.txt").write_text(done.stdout)
    (work / "sweep_err.txt").write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"screenshots: the sweep failed:\n{done.stderr[-3000:]}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="quickstart")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--reuse", action="store_true", help="the sweep already ran in --workdir")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="zf_shots_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    name = Path(args.space).stem
    summary = (work / "sweep.txt").read_text() if args.reuse else run_sweep(args.space, work, env)
    status = [line for line in (work / "sweep_err.txt").read_text().splitlines()
              if line.startswith("[")][-2:] if (work / "sweep_err.txt").exists() else []
    terminal = work / "summary.html"
    terminal.write_text(TERMINAL % html.escape("\n".join(status) + "\n" + summary.strip()))
    report = work / "report"
    subprocess.run(CLI + ["report", "--experiment", name, "--out", str(report)], cwd=work,
                   env=env, check=True, capture_output=True)

    from mlflow import MlflowClient

    experiment = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_experiment_by_name(name)
    port = free_port()
    ui = subprocess.Popen(CLI + ["ui", "--port", str(port)], cwd=work, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          start_new_session=True)
    page = browser(work / "profile")
    try:
        shoot(page, terminal.as_uri(), args.out / f"{name}_summary.png")
        shoot(page, (report / "report.html").as_uri(), args.out / f"{name}_report.png",
              "Table 1", height=2200)
        line = ui.stdout.readline()
        if not line.startswith("MLflow UI at "):
            raise SystemExit(f"screenshots: zeroflow ui said {line!r}")
        base = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}"
        view = "workflowType=machine_learning"  # MLflow 3's model-training view
        shoot(page, f"{base}/runs?{view}", args.out / "mlflow_runs.png", " · ", height=900,
              settle=3, prepare=tidy_mlflow)
        shoot(page, f"{base}/runs?{view}&compareRunsMode=CHART", args.out / "mlflow_charts.png",
              None, height=1100, settle=5, prepare=tidy_mlflow)
    finally:
        page.quit()
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)
    print(json.dumps({"workdir": str(work), "images": str(args.out)}))


if __name__ == "__main__":
    main()
