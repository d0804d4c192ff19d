"""Every test records MLflow runs into its own temporary store, never the checkout; tests
marked ``gpu`` skip cleanly where CUDA is absent (CI has none); ``headless_browser`` drives a
real Chromium for the browser tests; ``ray_session`` is one local Ray session per module.

``tiny_trial(**keys)`` is the one tiny trial config of the fast tests (import it:
``from conftest import tiny_trial``); each module states only what its tests vary."""

import shutil
import socket

import pytest
import torch

# The tiny trial: the embedded digits, batches of 16, 20 training samples per class.
TINY_TRIAL = dict(dataset="digits", batch_size=16, samples_per_class=20)


def tiny_trial(**keys) -> dict:
    """``TINY_TRIAL`` with ``keys`` on top (the split, epochs, batches per epoch, ...)."""
    return {**TINY_TRIAL, **keys}


def as_args(config: dict) -> list[str]:
    """A trial config as ``zeroflow run`` arguments: ``key=value`` each."""
    return [f"{k}={v}" for k, v in config.items()]


@pytest.fixture(autouse=True)
def _private_mlflow_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture(scope="session")
def free_port():
    """A callable returning a TCP port on 127.0.0.1 that was free a moment ago."""

    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return pick


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: run on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def headless_browser(tmp_path):
    """Debian's Chromium, headless, under Selenium; skips (with how to install it) where the
    browser or its driver is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no chromium/chromedriver installed (Debian: apt-get install chromium "
                    "chromium-driver)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options,
                               service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def ray_runtime_env():
    """What a module's Ray session carries to its workers (``ray.init(runtime_env=...)``): none
    here; a module overrides this fixture to install e.g. a worker_process_setup_hook."""
    return None


@pytest.fixture(scope="module")
def ray_session(ray_runtime_env):
    """One local Ray session (2 CPUs) shared by the module's tests: each start costs seconds."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env=ray_runtime_env)
    yield
    ray.shutdown()


@pytest.fixture
def interrupt_trial():
    """``interrupt_trial(config, checkpoint_dir, task=0)``: run a trial that dies right after it
    reported ``task`` (that task's checkpoint written), as a crash would leave it for resume."""
    from zeroflow.trial import run_trial

    class Crash(Exception):
        pass

    def run(config, checkpoint_dir, task: int = 0) -> None:
        def reporter(report):
            if report.task == task:
                raise Crash

        with pytest.raises(Crash):
            run_trial(config, reporter, checkpoint_dir=checkpoint_dir)

    return run
