"""Insight measures that explain forgetting rather than score it (ZeroFlow's Figures 3, 6 and 8;
ZO-FC's flatness claim), measurable on any run:

- ``probes``: the loss on a fixed probe batch of every seen task along training
  (``track_task_losses: N``), without touching what training computes.
- ``sharpness``: mean loss increase under random Gaussian perturbations of the trained tensors
  (forward passes only) and the top Hessian eigenvalue by power iteration (``sharpness: true``,
  ``sharpness_hessian: true``).
- ``trajectories``: the two-task 2-D toy run with every registered optimizer
  (``zeroflow trajectories``).

Importable without Ray and MLflow.
"""
