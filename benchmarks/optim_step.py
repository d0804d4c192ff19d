"""Step time and peak memory of every optimizer against plain inference, on one ViT.

    python benchmarks/optim_step.py                      # tiny ViT (32x32) on CPU
    python benchmarks/optim_step.py --backbone vit_base_patch16_224.augreg_in21k --batch 64
                                                         # ViT-B/16 (random weights) on GPU

What trains is what EASE trains on a task: one adapter set (every block) and a cosine head;
the backbone is frozen. Each row is measured in its own subprocess, so peak memory is that
row's alone: CUDA ``max_memory_allocated`` on GPU; on CPU the process's peak RSS, shown both
whole and as the rise above the process's RSS once the model and batch are built (the whole
figure is dominated by the Python/torch runtime). Time ratios divide a row's median step time by
the median of inference forwards timed in the same process, interleaved with the steps;
compare ratios, not absolute times, across machines.
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
    """One row: 'inference' (memory reference) or an optimizer name. Inference forwards are
    timed in the same process, interleaved with the steps, so the time ratio is in-run."""
    from zeroflow import optim

    device = torch.device(args.device)
    torch.manual_seed(0)
    model, head, x, y, params = _build(args, device)

    def loss_fn():
        model.reseed(0)
        return F.cross_entropy(head(model.features(x, 0)), y)

    def infer():
        with torch.no_grad():
            loss_fn()

    if args.one == "inference":
        for p in params:
            p.requires_grad_(False)
        run, opt = infer, None
    else:
        opt = optim.build(args.one, params, lr=1e-3, **(
            {} if optim.is_first_order(args.one) else {"q": args.q}))

        def closure():
            if opt.uses_backward:
                opt.zero_grad(set_to_none=True)
                loss = loss_fn()
                loss.backward()
                return loss.detach()
            return loss_fn()

        def run():
            opt.step(closure)

    def timed(fn) -> float:
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - start

    for p in params:
        p.requires_grad_(opt is not None and opt.uses_backward)
    for _ in range(args.warmup):
        run()
        infer()
    base_rss = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_times, fwd_times = [], []
    for _ in range(args.repeats):
        step_times.append(timed(run))
        with torch.no_grad():
            for p in params:  # inference never needs grads
                p.requires_grad_(False)
            fwd_times.append(timed(infer))
            for p in params:
                p.requires_grad_(opt is not None and opt.uses_backward)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    passes = 1 if opt is None else opt.forward_passes / (args.warmup + args.repeats)
    row = {"name": args.one, "ms": 1e3 * statistics.median(step_times),
           "fwd_ms": 1e3 * statistics.median(fwd_times), "passes": passes, "peak_mb": peak}
    if device.type != "cuda":
        row["rise_mb"] = peak - base_rss
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
          + (f" (rise {inf['rise_mb']:.0f} MB)" if cpu else "")
          + "; each row times its own inference forwards (fwd ms) interleaved with its steps")
    header = ["optimizer", "q", "passes/step", "step ms", "fwd ms", "step/(2q fwd)",
              "step/(passes fwd)", "peak MB", "peak/inference"] + (["rise MB"] if cpu else [])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for q in args.q:
        for name in optim.NAMES:
            if optim.is_first_order(name) and q != args.q[0]:
                continue
            r = child(name, q)
            fwd = r["fwd_ms"]
            cells = [name, str(q) if not optim.is_first_order(name) else "-",
                     f"{r['passes']:.0f}", f"{r['ms']:.2f}", f"{fwd:.2f}",
                     f"{r['ms'] / (2 * q * fwd):.2f}", f"{r['ms'] / (r['passes'] * fwd):.2f}",
                     f"{r['peak_mb']:.0f}", f"{r['peak_mb'] / inf['peak_mb']:.3f}"]
            if cpu:
                cells.append(f"{r['rise_mb']:.0f}")
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
