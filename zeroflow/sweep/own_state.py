"""A resumed sweep reads and writes its own folder only, even when it is a copy or was moved.

Tune keeps absolute places in two pieces of state that a restore does not update: the search
algorithm's saved state holds the launch's storage (so trials it creates after the restore, the
ones not started before the interruption, would write their checkpoints into the ORIGINAL
folder), and the driver's staging folder under the Ray session is named by the launch's time
and the sweep's name (so two copies of one sweep resumed in one Ray session share it).
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

# the search algorithms' state files Tune writes beside its experiment state
SEARCHER_STATES = ("basic-variant-state-*.json", "search_gen_state-*.json")


def clear_staged_state(path: str) -> None:
    """Remove what earlier resumes of a sweep of this name staged in this Ray session, so this
    one reads its own folder only (seen: a copy restored the searcher state another resume
    left there and ran 1 trial of 3). Resume one copy of a sweep at a time."""
    from ray.train.constants import _get_ray_train_session_dir  # Ray's staging root

    name = path.rstrip("/").rsplit("/", 1)[-1]
    for staged in Path(_get_ray_train_session_dir()).glob(f"*/{name}/driver_artifacts"):
        shutil.rmtree(staged, ignore_errors=True)


def rebase_searcher_state(path: str) -> int:
    """Point the storage inside the saved search-algorithm state of the sweep at ``path`` to
    ``path`` itself; the number of state files rewritten (0 when they already named it).

    Files are rewritten oldest first, so the newest stays newest (Tune restores the newest).
    The caller has checked the folder is trusted (``storage.check_trusted``): this unpickles."""
    import pyarrow.fs
    import ray.cloudpickle as cloudpickle
    from ray.train._internal.storage import get_fs_and_path

    parent, name = path.rstrip("/").rsplit("/", 1)
    fs, parent_fs_path = get_fs_and_path(parent)
    folder = f"{parent_fs_path.rstrip('/')}/{name}"
    infos = fs.get_file_info(pyarrow.fs.FileSelector(folder))
    found = [i for i in infos if any(fnmatch.fnmatch(i.base_name, p) for p in SEARCHER_STATES)]
    rewritten = 0
    for info in sorted(found, key=lambda i: i.mtime_ns or 0):
        with fs.open_input_stream(info.path) as stream:
            state = cloudpickle.loads(stream.read())
        if not _rebase(state, fs, parent_fs_path, name):
            continue
        with fs.open_output_stream(info.path) as out:
            out.write(cloudpickle.dumps(state))
        rewritten += 1
    return rewritten


def _rebase(obj, fs, storage_fs_path: str, name: str) -> bool:
    """Set every Tune storage context reachable from ``obj`` (through dicts, lists, tuples and
    objects' attributes: the generator's pending variants each hold a copy) to this folder;
    whether one changed."""
    from ray.train._internal.storage import StorageContext

    changed, seen, stack = False, set(), [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if id(item) in seen or depth > 12:
            continue
        seen.add(id(item))
        if isinstance(item, StorageContext):
            if (item.storage_fs_path, item.experiment_dir_name) != (storage_fs_path, name):
                item.storage_filesystem, item.storage_fs_path = fs, storage_fs_path
                item.experiment_dir_name, changed = name, True
        elif isinstance(item, dict):
            stack += [(child, depth + 1) for child in item.values()]
        elif isinstance(item, (list, tuple)):
            stack += [(child, depth + 1) for child in item]
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            stack += [(child, depth + 1) for child in vars(item).values()]
    return changed
