"""Peak memory of ``finetune`` training the whole backbone (``finetune_scope=full``) or one
adapter set, under first-order and forward-pass optimizers, against plain inference.

    python benchmarks/finetune_memory.py                  # tiny ViT (16x16) on CPU
    python benchmarks/finetune_memory.py --backbone vit_base_patch16_224.augreg_in21k --batch 32
                                                          # ViT-B/16 (random weights) on GPU

Each row runs in its own subprocess: the real ``Finetune`` learner, the trial loop's optimizer
construction (``task_steppers``: the configured optimizer with its momentum and weight decay)
and training closure, stepped ``--steps`` times on one random batch of task 0. Memory is CUDA
``max_memory_allocated`` on GPU; on CPU the rise of the process's peak RSS above its RSS once
the learner, optimizer and batch are built (the whole process is dominated by the Python/torch
runtime, and memory a row frees is not handed back reliably, hence one process per row).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from types import SimpleNamespace

import torch

ROWS = [("inference", "full"), ("fo-sgd", "full"), ("fo-adam", "full"), ("zo-sgd", "full"),
        ("zo-adam", "full"), ("forward-grad", "full"), ("fo-sgd", "adapter"),
        ("zo-sgd", "adapter")]


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _model(name: str, device: torch.device):
    import timm

    from zeroflow.models import create_backbone
    from zeroflow.models.backbone import AdaptedViT

    if name == "tiny":
        return create_backbone("tiny", device=device)
    # memory needs no pretrained weights (and none can be downloaded offline)
    return AdaptedViT(timm.create_model(name, pretrained=False, num_classes=0),
                      name=name).to(device)


def measure(args) -> dict:
    """One row: ``args.one`` (an optimizer, or 'inference') with ``args.scope``."""
    from zeroflow.config import make_config
    from zeroflow.methods.finetune import Finetune
    from zeroflow.steppers import task_steppers, training_closure

    device = torch.device(args.device)
    n_classes = 10
    scenario = SimpleNamespace(classes_seen=lambda t: n_classes,
                               task_classes=lambda t: range(0, n_classes))
    optimizer = "zo-sgd" if args.one == "inference" else args.one
    config = make_config(method="finetune", finetune_scope=args.scope, optimizer=optimizer,
                         lr=1e-4, q=args.q, seed=0)
    learner = Finetune(_model(args.backbone, device), scenario, config).to(device)
    learner.before_task(0)
    learner.to(device)
    gen = torch.Generator().manual_seed(0)
    size = learner.model.image_size
    x = torch.rand(args.batch, 3, size, size, generator=gen).to(device)
    y = torch.randint(0, n_classes, (args.batch,), generator=gen).to(device)
    groups = learner.param_groups()
    trained = sum(p.numel() for g in groups for p in g.params)
    stepper = task_steppers(learner, config, 0, 1)[0]  # as run_trial builds it
    opt = stepper.main
    for p in groups[0].params:
        p.requires_grad_(args.one != "inference" and opt.uses_backward)
    learner.train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    base = _rss_mb()
    for step in range(args.steps):
        if args.one == "inference":
            with torch.no_grad():
                learner.loss(x, y)
        else:
            opt.step(training_closure(learner, opt, x, y, step))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10 - base
    return {"name": args.one, "scope": args.scope, "trained": trained, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--q", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--scope", default="full", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args)))
        return

    def child(name, scope):
        cmd = [sys.executable, __file__, "--one", name, "--scope", scope, "--backbone",
               args.backbone, "--batch", str(args.batch), "--q", str(args.q), "--steps",
               str(args.steps), "--device", args.device]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    cuda = args.device.startswith("cuda")
    dev = torch.cuda.get_device_name() if cuda else (
        f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")
    what = "CUDA max allocated" if cuda else "peak RSS rise over the built learner"
    print(f"# finetune, {args.backbone}, batch {args.batch}, q {args.q}, {args.steps} steps; "
          f"{dev}; torch {torch.__version__}; memory: {what}")
    inf = child("inference", "full")
    print("| optimizer | finetune_scope | trained parameters | peak MB | peak/inference |")
    print("|---|---|---|---|---|")
    for name, scope in ROWS:
        r = inf if name == "inference" else child(name, scope)
        ratio = r["peak_mb"] / inf["peak_mb"] if inf["peak_mb"] > 0 else float("nan")
        trained = "-" if name == "inference" else f"{r['trained']:,}"
        print(f"| {name} | {scope if name != 'inference' else '-'} | {trained} | "
              f"{r['peak_mb']:.1f} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
