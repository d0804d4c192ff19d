"""Insight measures that explain forgetting rather than score it (ZeroFlow's Figures 3, 6 and 8;
ZO-FC's flatness claim), measurable on any run:

- ``probes``: the loss on a fixed probe batch of every seen task along training
  (``track_task_losses: N``), without touching what training computes.
- ``sharpness``: mean loss increase under random Gaussian perturbations of the trained tensors
  (forward passes only) and the top Hessian eigenvalue by power iteration (``sharpness: true``,
  ``sharpness_hessian: true``).
- ``trajectories``: every registered optimizer on a 2-D toy (``zeroflow trajectories``):
  ``toy_infty``, the authors' toy (the default), or ``toy_bowls``; ``toy_problems`` runs a path.

An analysis is an observer of the trial loop (``zeroflow.observers``): ``observers`` below
builds those a config asks for; a new analysis is a new module and one line there. Importable
without Ray and MLflow.
"""

from __future__ import annotations

from zeroflow.analysis.probes import ProbePasses, TaskLosses, TaskProbes
from zeroflow.analysis.sharpness import Sharpness
from zeroflow.observers import Observer


def observers(config, scenario, device) -> list[Observer]:
    """The analysis observers ``config`` asks for, in the order their metrics are reported
    (the probes' forward-pass count last); none without ``track_task_losses``/``sharpness``."""
    if not (config.track_task_losses or config.sharpness):
        return []
    probes = TaskProbes(scenario, config.seed, device)
    out: list[Observer] = []
    if config.track_task_losses:
        out.append(TaskLosses(probes, config.track_task_losses))
    if config.sharpness:
        out.append(Sharpness(probes, config.sharpness_hessian))
    return [*out, ProbePasses(probes)]


__all__ = ["observers"]
