"""The task checkpoint: one file, ``trial.pt``, written after every task and read to resume.

It holds tensors and plain data only (``torch.load(..., weights_only=True)`` reads it): the
format version, the trial config, the last finished task, the learner's trainable state, the
optimizers' states, the accuracy matrix, the running counters, the per-task metrics and
step-level series. A trial resumes from it only under the same config, save the keys that say
where and how fast it runs (``FREE_ON_RESUME``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from zeroflow.config import TrialConfig
from zeroflow.errors import CheckpointError, ConfigError

CHECKPOINT_FILE = "trial.pt"
CHECKPOINT_VERSION = 2  # 2: loadable with weights_only (no numpy arrays)
# keys that may differ when a trial resumes: where and how fast it runs, not what it computes
FREE_ON_RESUME = ("device", "num_workers", "eval_batch_size", "data_root", "download",
                  "query_workers", "worker_cpus", "worker_gpus", "track_task_losses", "sharpness",
                  "sharpness_hessian", "sharpness_scope")


def task_checkpoint(config: TrialConfig, task: int, learner, steppers, matrix, counters: dict,
                    history: list[dict], series: list[dict]) -> dict:
    """The checkpoint after task ``task`` (everything a resumed trial needs, nothing else)."""
    return {
        "version": CHECKPOINT_VERSION, "config": config.to_dict(), "task": task,
        "learner": learner.trainable_state(),
        "optimizers": [s.state_dict() for s in steppers],
        "matrix": matrix.state_dict(), "counters": dict(counters), "history": history,
        "series": series,
    }


def save_checkpoint(directory: Path, payload: dict) -> None:
    """Write ``payload`` as ``directory/trial.pt`` atomically (a crash leaves the old one)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (CHECKPOINT_FILE + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, directory / CHECKPOINT_FILE)


def load_checkpoint(directory: str | os.PathLike) -> dict | None:
    """The task checkpoint in ``directory`` (None if there is none).

    Loaded with ``weights_only=True``: a checkpoint holds tensors and plain data only, so this
    file cannot run code when read. It is the only file covered so: a sweep's folder also holds
    Ray Tune's pickles (``tuner.pkl``, experiment state), which run code when a resume reads
    them, hence ``zeroflow.sweep.storage.check_trusted`` before any resume; and a checkpoint
    someone else replaced with other tensors is loaded as it is (trust the storage, not the
    file)."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling raises many types
        text = str(err)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        detail = [line.strip() for line in text.split("WeightsUnpickler error:")[-1].splitlines()
                  if line.strip()]
        reason = (f"it refers to {found.group(1)}, which is not tensors or plain data" if found
                  else f"unreadable: {detail[0][:160] if detail else type(err).__name__}")
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded safely ({reason}); it must hold only "
            "tensors and plain data: delete it (the trial restarts) or use another "
            "checkpoint_dir") from None


def check_resumable(ckpt: dict, config: TrialConfig) -> None:
    """``ConfigError`` unless ``ckpt`` was written by this format for the same trial."""
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ConfigError("checkpoint was written by another zeroflow version; start afresh "
                          "with another checkpoint_dir")
    saved = ckpt["config"]
    current = config.to_dict()
    diff = [k for k in current if k not in FREE_ON_RESUME and saved.get(k) != current[k]]
    if diff:
        pairs = ", ".join(f"{k}: {saved.get(k)!r} → {getattr(config, k)!r}" for k in diff)
        raise ConfigError(f"checkpoint belongs to another trial ({pairs}); use the same config "
                          "or another checkpoint_dir")
