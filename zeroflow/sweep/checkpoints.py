"""A sweep trial's checkpoints in storage, found again without trusting Tune's state.

Tune saves its experiment state every few seconds, so a driver killed between two saves leaves a
state that names an older checkpoint than the trial wrote (or none), and says RUNNING for a trial
that had finished. Every checkpoint folder a trial reports therefore carries ``MARKER``: the
results the trial reported up to that task (plain JSON) and the size of its ``trial.pt``. A trial
that starts again reads the markers of its own storage folder and continues from the newest
complete checkpoint, or only reports its final result again when that checkpoint is its last
task's; the results before it let the driver log tasks it never saw (``backfill``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "zeroflow_results.json"


@dataclass
class Found:
    """A complete checkpoint folder in storage: where it is, and what the trial had reported by
    then (one result per task, oldest first)."""

    path: str
    results: list[dict] = field(default_factory=list)

    @property
    def task(self) -> int:
        return int(self.results[-1]["task"]) if self.results else -1



def write_marker(directory: str | os.PathLike, results: list[dict]) -> None:
    """Record ``results`` beside the ``trial.pt`` already in ``directory``."""
    from zeroflow.checkpoint import CHECKPOINT_FILE

    directory = Path(directory)
    size = (directory / CHECKPOINT_FILE).stat().st_size
    (directory / MARKER).write_text(json.dumps({"bytes": size, "results": results}))


def newest(fs, trial_path: str) -> Found | None:
    """The complete checkpoint folder with the highest task under ``trial_path`` on the pyarrow
    filesystem ``fs``: its marker parses and its ``trial.pt`` has the size the marker names (a
    checkpoint cut short by a kill is skipped). None if there is none."""
    from zeroflow.checkpoint import CHECKPOINT_FILE

    found = []
    for folder in (i.path for i in _checkpoint_folders(fs, trial_path)):
        marker = _read_json(fs, f"{folder}/{MARKER}")
        if not isinstance(marker, dict) or not marker.get("results"):
            continue
        size = fs.get_file_info(f"{folder}/{CHECKPOINT_FILE}").size
        if size is not None and size == marker.get("bytes"):
            found.append(Found(folder, list(marker["results"])))
    return max(found, key=lambda f: (f.task, f.path), default=None)


def highest_index(fs, trial_path: str) -> int:
    """The highest ``checkpoint_<n>`` folder number under ``trial_path`` (complete or not), -1 if
    there is none."""
    numbers = [i.base_name[len("checkpoint_"):] for i in _checkpoint_folders(fs, trial_path)]
    return max((int(n) for n in numbers if n.isdigit()), default=-1)


def _checkpoint_folders(fs, trial_path: str) -> list:
    """The ``checkpoint_*`` folders under ``trial_path`` (pyarrow FileInfos; none if the path
    cannot be listed)."""
    import pyarrow.fs

    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(trial_path, allow_not_found=True))
    except OSError:
        return []
    return [i for i in infos if i.type == pyarrow.fs.FileType.Directory
            and i.base_name.startswith("checkpoint_")]


def reported_results(checkpoint) -> list[dict] | None:
    """The results recorded with a Tune ``Checkpoint`` (its ``MARKER``), read straight from its
    filesystem (no download of the checkpoint); None for a checkpoint without one."""
    marker = _read_json(checkpoint.filesystem, f"{checkpoint.path}/{MARKER}")
    return list(marker["results"]) if isinstance(marker, dict) and marker.get(
        "results") else None


def _read_json(fs, path: str):
    try:
        with fs.open_input_stream(path) as stream:
            return json.loads(stream.read().decode())
    except (OSError, ValueError):
        return None
