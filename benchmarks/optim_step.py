"""Step time and peak memory of every optimizer against plain inference, on one ViT.

    python benchmarks/optim_step.py                      # tiny ViT (16x16) on CPU
    python benchmarks/optim_step.py --backbone vit_base_patch16_224.augreg_in21k --batch 64
                                                         # ViT-B/16 (random weights) on GPU
    python benchmarks/optim_step.py --backbone vit_small_patch16_224 --full --batch 8 \
        --before /tmp/zeroflow-before --infty           # zo-sgd's step regimes, full backbone

What trains is what EASE trains on a task: one adapter set (every block) and a cosine head;
the backbone is frozen. Each row is measured in its own subprocess, so peak memory is that
row's alone: CUDA ``max_memory_allocated`` on GPU; on CPU the process's peak RSS, shown both
whole and as the rise above the process's RSS once the model and batch are built (the whole
figure is dominated by the Python/torch runtime). Time ratios divide a row's median step time by
the median of inference forwards timed in the same process, interleaved with the steps;
compare ratios, not absolute times, across machines.

``--regimes`` (implied by ``--full``, which trains every backbone tensor and the head instead of
adapters) prints zo-sgd in each step regime (``direction_buffer`` x ``exact_restore``, see
``zeroflow.optim.zo``) with plain SGD as MeZO runs it (momentum 0, no weight decay), so that
memory growth is the step's own: growth = peak RSS during the steps (the kernel's VmHWM, reset
once the model is built and has run its inference warm-up) minus the RSS at that reset.
``--before DIR`` adds a row timed with the zeroflow package found in DIR (e.g. an older commit
exported with ``git archive``); ``--infty`` adds the ZeroFlow paper's reference optimizer
(PyPI ``infty``, ``infty.optim.ZeroFlow`` with ``inftyopt="zo_sgd"`` over ``torch.optim.SGD``),
installed on first use with ``pip install --no-deps --target`` into ``--infty-dir`` (its
plotting dependencies are not needed for the optimizer).
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


def _hwm_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as fh:  # "5" resets the peak RSS (Linux >= 4.0)
        fh.write("5")


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
    if not args.full:
        model.add_adapter_set()
    head = CosineHead(model.embed_dim, 10, torch.Generator().manual_seed(0)).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, model.image_size, model.image_size, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
    if args.full:
        params = [p for p in model.parameters()] + list(head.parameters())
    else:
        params = list(model.adapter_sets[0].parameters()) + list(head.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    return model, head, x, y, params


def _forward_loss(args, model, head, x, y):
    """The benchmark's loss closure: one training forward with fixed dropout."""

    def loss():
        model.reseed(0)
        return F.cross_entropy(head(model.features(x, None if args.full else 0)), y)

    return loss


def _model_numel(model, head) -> int:
    """Every parameter of the model and head (what direction_buffer="auto" compares with)."""
    return sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in head.parameters())


def _infty_step(args, model, head, x, y, params, loss_fn):
    """The reference optimizer's zo-sgd step over the same tensors and loss."""
    sys.path.insert(0, args.infty_dir)
    from infty.optim import ZeroFlow

    class Both(torch.nn.Module):  # INFTY perturbs the requires_grad tensors of one module
        def __init__(self):
            super().__init__()
            self.model, self.head = model, head

    both = Both()
    for p in both.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    base = torch.optim.SGD(params, lr=1e-3, momentum=0.0)
    opt = ZeroFlow(params, base, both, {"q": args.q, "inftyopt": "zo_sgd", "zo_eps": 1e-3})
    opt.set_closure(lambda: (None, [loss_fn()]))
    count = {"passes": 0}
    inner = opt.forward_func

    def counted():
        count["passes"] += 1
        return inner()

    opt.forward_func = counted
    return opt, count


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(args) -> dict:
    """Step times of every regime (and INFTY) in one process, round-robin with inference
    forwards, so that all rows see the same load (timing only; memory comes from the rows'
    own processes). Returns {label: [step ms, fwd ms]} medians."""
    from zeroflow import optim

    device = torch.device(args.device)
    torch.manual_seed(0)
    model, head, x, y, params = _build(args, device)

    forward_loss = _forward_loss(args, model, head, x, y)

    def free_loss():  # the step's own work: every trainable tensor read, no model forward
        return sum(p.view(-1)[0] for p in params)

    loss_fn = free_loss if args.overhead else forward_loss
    runs = {}
    for _label, regime in REGIMES:
        buffer, restore = regime.split("-")
        hp = {"q": args.q, "momentum": 0.0, "weight_decay": 0.0,
              "exact_restore": restore == "exact", "direction_buffer": buffer}
        if buffer == "auto":
            hp["model_numel"] = _model_numel(model, head)
        opt = optim.build("zo-sgd", params, lr=1e-3, **hp)
        runs[regime] = (lambda o=opt: o.step(loss_fn))
    if args.infty:
        opt, _ = _infty_step(args, model, head, x, y, params, loss_fn)
        for p in params:
            p.requires_grad_(False)  # INFTY collects requires_grad tensors at each step

        def infty_run(o=opt):
            for p in params:
                p.requires_grad_(True)
            o.step()
            model.train()
            for p in params:
                p.requires_grad_(False)

        runs["infty"] = infty_run

    def infer():
        with torch.no_grad():
            forward_loss()

    times = {k: [] for k in runs}
    fwd = []
    for i in range(args.warmup + args.repeats):
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            if i >= args.warmup:
                times[key].append(time.perf_counter() - start)
            if args.overhead and key != next(iter(runs)):
                continue  # one forward per round is enough to scale the overheads
            start = time.perf_counter()
            infer()
            if i >= args.warmup:
                fwd.append(time.perf_counter() - start)
    return {"fwd_ms": 1e3 * statistics.median(fwd),
            **{k: 1e3 * statistics.median(v) for k, v in times.items()}}


def measure(args) -> dict:
    """One row: 'inference' (memory reference) or an optimizer name. Inference forwards are
    timed in the same process, interleaved with the steps, so the time ratio is in-run."""
    from zeroflow import optim

    device = torch.device(args.device)
    torch.manual_seed(0)
    model, head, x, y, params = _build(args, device)

    loss_fn = _forward_loss(args, model, head, x, y)

    def infer():
        with torch.no_grad():
            loss_fn()

    infty_count = None
    if args.one == "inference":
        for p in params:
            p.requires_grad_(False)
        run, opt = infer, None
    elif args.one == "infty":
        opt, infty_count = _infty_step(args, model, head, x, y, params, loss_fn)

        def run():
            opt.step()
            model.train()  # INFTY's forwards switch the model to eval()
    elif args.regime:
        buffer, restore = args.regime.split("-")
        hp = {"q": args.q, "momentum": 0.0, "weight_decay": 0.0,
              "exact_restore": restore == "exact"}
        if buffer != "before":  # the old code has no direction_buffer
            hp["direction_buffer"] = buffer
        if buffer == "auto":
            hp["model_numel"] = _model_numel(model, head)
        opt = optim.build(args.one, params, lr=1e-3, **hp)

        def closure():
            return loss_fn()

        def run():
            opt.step(closure)
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

    def grads() -> bool:  # FO needs them; INFTY finds its tensors by requires_grad
        return opt is not None and (infty_count is not None or opt.uses_backward)

    for p in params:
        p.requires_grad_(grads())
    if args.regime or args.one == "infty":  # growth = the steps' own peak over settled RSS
        for _ in range(2):
            infer()
        base_rss = _rss_mb()
        _reset_hwm()
    for _ in range(args.warmup):
        run()
        infer()
    if not (args.regime or args.one == "infty"):
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
                p.requires_grad_(grads())
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    elif args.regime or args.one == "infty":
        peak = _hwm_mb()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    done = args.warmup + args.repeats
    if opt is None:
        passes = 1
    elif infty_count is not None:
        passes = infty_count["passes"] / done
    else:
        passes = opt.forward_passes / done
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
    parser.add_argument("--full", action="store_true",
                        help="train every backbone tensor and the head (no adapters)")
    parser.add_argument("--regimes", action="store_true",
                        help="zo-sgd in each step regime instead of every optimizer")
    parser.add_argument("--before", metavar="DIR",
                        help="also time zo-sgd with the zeroflow package in DIR")
    parser.add_argument("--infty", action="store_true",
                        help="also time INFTY's zo-sgd (PyPI infty, installed on first use)")
    parser.add_argument("--infty-dir", default=os.path.expanduser("~/.cache/zeroflow/infty"))
    parser.add_argument("--interleave", action="store_true",
                        help="with --regimes: also time every regime round-robin in one process")
    parser.add_argument("--overhead", action="store_true",
                        help="with --interleave: time the steps with a free loss (no forward), "
                             "i.e. the optimizer's own work per step")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--regime", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.q = args.q[0]
        print(json.dumps(interleaved(args) if args.one == "interleave" else measure(args)))
        return

    from zeroflow import optim

    def child(name, q, regime=None, path=None):
        cmd = [sys.executable, __file__, "--one", name, "--backbone", args.backbone,
               "--batch", str(args.batch), "--q", str(q), "--repeats", str(args.repeats),
               "--warmup", str(args.warmup), "--device", args.device,
               "--infty-dir", args.infty_dir] + (["--full"] if args.full else []) + (
                   ["--infty"] if args.infty else []) + (
                   ["--overhead"] if args.overhead and name == "interleave" else []) + (
                   ["--regime", regime] if regime else [])
        env = dict(os.environ)
        if path:
            env["PYTHONPATH"] = os.path.abspath(path)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        return json.loads(out.strip().splitlines()[-1])

    if args.full or args.regimes:
        regimes(args, child)
        return

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


REGIMES = [  # (label, --regime): the old default first
    ("seed-only, copy restore (off, exact)", "off-exact"),
    ("lean (off, subtractive restore)", "off-lean"),
    ("fast (on, copy restore)", "on-exact"),
    ("fast (on, subtractive restore)", "on-lean"),
    ("auto (model_numel given), copy restore", "auto-exact"),
]


def _infty_version(path: str) -> str:
    from importlib.metadata import distributions

    for dist in distributions(path=[path]):
        if dist.metadata["Name"] == "infty":
            return dist.version
    return "?"


def regimes(args, child) -> None:
    """zo-sgd's step regimes (and the old code, and INFTY, when asked) on one model."""
    rows = list(REGIMES)
    if args.before:
        rows.insert(0, (f"before: zeroflow from {args.before}", "before-exact"))
    if args.infty:
        if not os.path.isdir(os.path.join(args.infty_dir, "infty")):
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                            "--target", args.infty_dir, "infty"], check=True)
        rows.append((f"INFTY {_infty_version(args.infty_dir)} ZeroFlow(zo_sgd)", None))
    scope = "every tensor (full backbone) + head" if args.full else "adapters + cosine head"
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")
    print(f"# {args.backbone}, batch {args.batch}, {scope} trained; zo-sgd, momentum 0, no "
          f"weight decay; {dev}; torch {torch.__version__}")
    inf = child("inference", 1, "inference-exact")
    print(f"# inference: {inf['ms']:.1f} ms per forward, growth {inf['rise_mb']:.0f} MB; "
          "each row times its own forwards (fwd ms) interleaved with its steps")
    header = ["regime", "q", "passes/step", "step ms", "fwd ms", "step/(2q fwd)",
              "growth MB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for q in args.q:
        for label, regime in rows:
            if regime is None:
                r = child("infty", q)
            else:
                path = args.before if regime.startswith("before") else None
                r = child("zo-sgd", q, regime, path)
            cells = [label, str(q), f"{r['passes']:.0f}", f"{r['ms']:.0f}", f"{r['fwd_ms']:.0f}",
                     f"{r['ms'] / (2 * q * r['fwd_ms']):.2f}", f"{r['rise_mb']:.0f}"]
            print("| " + " | ".join(cells) + " |", flush=True)
        if args.interleave:
            r = child("interleave", q)
            what = "optimizer's own work per step (free loss)" if args.overhead else "step"
            print(f"\n# q = {q}, every regime round-robin in one process (same load for all): "
                  f"inference forward {r['fwd_ms']:.0f} ms (median of all); {what}")
            if args.overhead:
                print("| regime | own ms | (2q fwd + own) / (2q fwd) | own / seed-only copy |")
            else:
                print("| regime | step ms | step/(2q fwd) | step / seed-only copy restore |")
            print("|---|---|---|---|")
            base = r["off-exact"]
            for label, regime in rows:
                key = "infty" if regime is None else regime
                if key in r:
                    two = 2 * q * r["fwd_ms"]
                    ratio = (two + r[key]) / two if args.overhead else r[key] / two
                    print(f"| {label} | {r[key]:.0f} | {ratio:.2f} | {r[key] / base:.2f} |",
                          flush=True)


if __name__ == "__main__":
    main()
