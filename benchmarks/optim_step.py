"""Step time and peak memory of every optimizer against plain inference, on one ViT.

    python benchmarks/optim_step.py                      # tiny ViT (32x32) on CPU
    python benchmarks/optim_step.py --backbone vit_base_patch16_224.augreg_in21k --batch 64
                                                         # ViT-B/16 (random weights) on GPU

What trains is what EASE trains on a task: one adapter set (every block) and a cosine head;
the backbone is frozen. Each row is measured in its own subprocess, so peak memory is that
row's alone: CUDA ``max_memory_allocated`` on GPU; on CPU the process's peak RSS, shown both
whole and as the rise above the process's RSS once the model and batch are built (the whole
figure is dominated by the Python/torch runtime). Ratios are within one run of this script;
compare them, not absolute times, across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _build(args, device):
    import timm

    from zeroflow.methods.base import CosineHead
    from zeroflow.models import create_backbone
    from zeroflow.models.backbone import AdaptedViT

    if args.backbone == "tiny":
        model = create_backbone("tiny", device=device)
    else:  # timing needs no pretrained weights (and none can be downloaded offline)
        model = AdaptedViT(timm.create_model(args.backbone, pretrained=False, num_classes=0),
                           name=args.backbone).to(device)
    model.add_adapter_set()
    head = CosineHead(model.embed_dim, 10, torch.Generator().manual_seed(0)).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, model.image_size, model.image_size, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
    params = list(model.adapter_sets[0].parameters()) + list(head.parameters())
    model.train()
    return model, head, x, y, params


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args) -> dict:
    """One row: 'inference' or an optimizer name."""
    from zeroflow import optim

    device = torch.device(args.device)
    torch.manual_seed(0)
    model, head, x, y, params = _build(args, device)

    def loss_fn():
        model.reseed(0)
        return F.cross_entropy(head(model.features(x, 0)), y)

    if args.one == "inference":
        for p in params:
            p.requires_grad_(False)

        def run():
            with torch.no_grad():
                loss_fn()

        passes = 1
    else:
        opt = optim.build(args.one, params, lr=1e-3, **(
            {} if optim.is_first_order(args.one) else {"q": args.q}))
        for p in params:
            p.requires_grad_(opt.uses_backward)

        def closure():
            if opt.uses_backward:
                opt.zero_grad(set_to_none=True)
                loss = loss_fn()
                loss.backward()
                return loss
            return loss_fn()

        def run():
            opt.step(closure)

        passes = None
    for _ in range(args.warmup):
        run()
    _sync(device)
    base_rss = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    if passes is None:
        passes = opt.forward_passes / (args.warmup + args.repeats)
    row = {"name": args.one, "ms": 1e3 * statistics.median(times), "passes": passes}
    if device.type == "cuda":
        row["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        row["rise_mb"] = row["peak_mb"] - base_rss
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--q", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.q = args.q[0]
        print(json.dumps(measure(args)))
        return

    from zeroflow import optim

    def child(name, q):
        cmd = [sys.executable, __file__, "--one", name, "--backbone", args.backbone,
               "--batch", str(args.batch), "--q", str(q), "--repeats", str(args.repeats),
               "--warmup", str(args.warmup), "--device", args.device]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")
    print(f"# {args.backbone}, batch {args.batch}, adapters + cosine head trained; {dev}; "
          f"torch {torch.__version__}")
    inf = child("inference", 1)
    cpu = not args.device.startswith("cuda")
    print(f"# inference forward: {inf['ms']:.2f} ms, peak {inf['peak_mb']:.0f} MB"
          + (f" (rise {inf['rise_mb']:.0f} MB)" if cpu else ""))
    header = ["optimizer", "q", "passes/step", "step ms", "step/(2q fwd)", "step/(passes fwd)",
              "peak MB", "peak/inference"] + (["rise MB"] if cpu else [])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for q in args.q:
        for name in optim.NAMES:
            if optim.is_first_order(name) and q != args.q[0]:
                continue
            r = child(name, q)
            cells = [name, str(q) if not optim.is_first_order(name) else "-",
                     f"{r['passes']:.0f}", f"{r['ms']:.2f}", f"{r['ms'] / (2 * q * inf['ms']):.2f}",
                     f"{r['ms'] / (r['passes'] * inf['ms']):.2f}", f"{r['peak_mb']:.0f}",
                     f"{r['peak_mb'] / inf['peak_mb']:.3f}"]
            if cpu:
                cells.append(f"{r['rise_mb']:.0f}")
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
