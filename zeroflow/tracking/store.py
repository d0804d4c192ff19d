"""Where runs are recorded: the tracking URI and the artifact location.

Default store: ``sqlite:///<absolute path>/mlflow.db`` in the directory the user launched from
(Ray trials change directory, so the path is absolute); ``MLFLOW_TRACKING_URI`` points
elsewhere (e.g. a server). One writer per SQLite file: the driver logs, or a server sits in
front."""

from __future__ import annotations

import os
from pathlib import Path


def default_tracking_uri(launch_dir: str | os.PathLike | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else SQLite in ``launch_dir`` (default: the cwd)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = Path(launch_dir or os.getcwd()).resolve()
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_location(uri: str) -> str | None:
    """Artifacts of a local SQLite store go to ``mlartifacts/`` beside the database (absolute,
    so trials and the UI find them from any directory); a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def make_private_store(uri: str) -> None:
    """A local SQLite store and its ``mlartifacts/`` are created for their owner only (runs
    hold checkpoints that later runs resume from); an existing one is left as it is."""
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    if not db.exists():
        os.close(os.open(db, os.O_CREAT | os.O_WRONLY, 0o600))  # SQLite accepts an empty file
    artifacts = db.parent / "mlartifacts"
    if not artifacts.exists():
        artifacts.mkdir(mode=0o700)
