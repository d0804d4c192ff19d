"""What a sweep will run, known before Ray starts: the space files shipped in the package, a
space named or given by path, and its trials resolved (``zeroflow sweep --list``,
``--dry-run``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zeroflow.config import make_config
from zeroflow.errors import ConfigError
from zeroflow.sweep.space import Space


def shipped_spaces() -> dict[str, Path]:
    """The space files shipped in the package (``zeroflow/spaces``), by name."""
    from importlib import resources

    folder = resources.files("zeroflow") / "spaces"
    return {Path(f.name).stem: Path(str(f)) for f in sorted(folder.iterdir(), key=str)
            if f.name.endswith(".yaml")}


def space_summary(path: Path, width: int = 100) -> str:
    """What a space file runs: the first sentence of its leading comment, cut to ``width``."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("#").split()
    text = " ".join(words)
    end = text.find(". ")
    text = text if end < 0 else text[:end + 1]
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def resolve_space(space: str | os.PathLike) -> Path:
    """A space file: ``space`` itself when that path exists, else the shipped space of that name
    (``zeroflow sweep quickstart``)."""
    path = Path(space).expanduser()
    if path.exists():
        return path
    shipped = shipped_spaces()
    if str(space) in shipped:
        return shipped[str(space)]
    raise ConfigError(f"space file {space} does not exist and no shipped space has that name; "
                      f"shipped: {', '.join(shipped)} (zeroflow sweep --list)")


def planned_trials(space: Space) -> list[dict[str, Any]]:
    """The trial configs a gridded sweep runs, override rules applied and every key resolved,
    in Ray's order (each grid point, then each seed). A key drawn by a ``sample`` section, or
    every key when a searcher picks the trials, is shown as its distribution instead."""
    if space.searched:
        raise ConfigError(f"{space.name}: a searcher ({space.search['algorithm']}) picks the "
                          f"trials while the sweep runs, so there is no list to show; "
                          f"use search: {{algorithm: grid}} to fix them in advance")
    seeds = ([int(space.base.get("seed", 0)) + i for i in range(space.run["num_samples"])]
             if space.seeds_from_samples else [None])
    out = []
    for point in space.points():
        for seed in seeds:
            config = {**space.base, **point, **({} if seed is None else {"seed": seed})}
            trial = make_config(space.apply_overrides(config)).to_dict()
            for key, spec in space.sample.items():
                trial[key] = spec  # e.g. {"loguniform": [0.0001, 0.1]}: drawn per trial
            out.append(trial)
    return out * (1 if space.seeds_from_samples else space.num_samples)
