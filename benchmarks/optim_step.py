"""Step time and peak memory of every optimizer against plain inference, on one ViT.

    python benchmarks/optim_step.py                      # tiny ViT (16x16) on CPU
    python benchmarks/optim_step.py --backbone vit_base_patch16_224.augreg_in21k --batch 64
                                                         # ViT-B/16 (random weights) on GPU
    python benchmarks/optim_step.py --backbone vit_small_patch16_224 --full --batch 8 \
        --before /tmp/zeroflow-before --infty           # zo-sgd's step regimes, full backbone
    python benchmarks/optim_step.py --compare --backbone vit_small_patch16_224 --full \
        --batch 8 --q 1 --momentum 0.9 --infty          # fast, lean, default beside INFTY

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
exported with ``git archive``); ``--infty`` adds the ZeroFlow paper's reference optimizer's
step (INFTY's ``ZeroFlow`` with ``inftyopt="zo_sgd"`` over ``torch.optim.SGD``, q = 1),
re-implemented in ``infty_reference.py`` with the same tensor operations.

``--compare`` prints zeroflow's fast (with either restore), lean and default zo-sgd beside
INFTY's step (and, with ``--before DIR``, DIR's code in the same regimes, timed in the same
process: ``load_before_optim``; DIR's zo-sgd must take ``direction_buffer``). Time: every
row's full step and its own work (the same step with a loss that reads
the tensors but runs no forward) round-robin in ONE process with inference forwards, so that all
see the same load (``round_robin``); with them "beyond" = step - 2q forwards - own work (what a
step costs that neither its forwards nor its own work explain) and the minor page faults per
step (memory touched for the first time). Memory: each row in its own process (growth as for
``--regimes``). ``--interleave`` adds the same round-robin table to ``--regimes``.
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
from pathlib import Path

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


def build_model(backbone: str, full: bool, batch: int, device, n_classes: int = 10):
    """The benchmark's model: ``backbone`` (``tiny``, or a timm ViT with random weights: timing
    needs no pretrained ones, and none can be downloaded offline) with one adapter set, or
    every backbone tensor trainable (``full``), a cosine head, and one random batch. Returns
    (model, head, x, y, trainable tensors); every tensor has requires_grad off."""
    import timm

    from zeroflow.methods.base import CosineHead
    from zeroflow.models import create_backbone
    from zeroflow.models.backbone import AdaptedViT

    if backbone == "tiny":
        model = create_backbone("tiny", device=device)
    else:
        model = AdaptedViT(timm.create_model(backbone, pretrained=False, num_classes=0),
                           name=backbone).to(device)
    if not full:
        model.add_adapter_set()
    head = CosineHead(model.embed_dim, n_classes, torch.Generator().manual_seed(0)).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, model.image_size, model.image_size, generator=gen).to(device)
    y = torch.randint(0, n_classes, (batch,), generator=gen).to(device)
    if full:
        params = [p for p in model.parameters()] + list(head.parameters())
    else:
        params = list(model.adapter_sets[0].parameters()) + list(head.parameters())
    for p in list(model.parameters()) + list(head.parameters()):
        p.requires_grad_(False)
    model.train()
    return model, head, x, y, params


def forward_loss(model, head, x, y, full: bool, autocast: torch.dtype | None = None):
    """The benchmark's loss closure: one training forward with fixed dropout (under
    ``torch.autocast`` to ``autocast`` when given; the tensors themselves stay as built)."""
    import contextlib

    def loss():
        model.reseed(0)
        ctx = (torch.autocast(x.device.type, dtype=autocast) if autocast is not None
               else contextlib.nullcontext())
        with ctx:
            out = F.cross_entropy(head(model.features(x, None if full else 0)), y)
        return out.float()

    return loss


def free_loss(params):
    """A loss that reads every trainable tensor but runs no model: a step with it costs the
    optimizer's own work alone."""

    def loss():
        return sum(p.view(-1)[0] for p in params)

    return loss


def model_numel(model, head) -> int:
    """Every parameter of the model and head (what direction_buffer="auto" compares with)."""
    return sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in head.parameters())


def zo_hparams(regime: str, q: int, momentum: float, numel: int | None = None) -> dict:
    """zo-sgd's hyper-parameters for a ``BUFFER-RESTORE`` regime key (e.g. ``on-exact``): no
    weight decay (INFTY's SGD has none), ``numel`` passed to ``auto`` as a trial passes it."""
    buffer, restore = regime.split("-")
    hp = {"q": q, "momentum": momentum, "weight_decay": 0.0,
          "exact_restore": restore == "exact"}
    if buffer != "before":  # the old code has no direction_buffer
        hp["direction_buffer"] = buffer
    if buffer == "auto":
        hp["model_numel"] = numel
    return hp


def _infty_step(args, model, head, params, loss_fn):
    """INFTY's zo-sgd step (``infty_reference``, q = 1) over the same tensors and loss, with
    ``torch.optim.SGD`` (no weight decay) as its base; returns (optimizer, callable step)."""
    from infty_reference import InftyZoSgd

    if args.q != 1:
        raise SystemExit("--infty: INFTY's zo_sgd step is re-implemented for q = 1 only")
    base = torch.optim.SGD(params, lr=1e-3, momentum=args.momentum)
    opt = InftyZoSgd(params, base, model, loss_fn)

    def run():
        opt.step()
        model.train()  # INFTY leaves the model in eval mode; the other rows train

    return opt, run


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def round_robin(runs: dict, infer, device, repeats: int, warmup: int) -> dict:
    """Time every callable in ``runs`` round-robin in this process, with one call of
    ``infer`` (an inference forward) after each, so that all see the same load. Returns
    {"fwd_ms", "fwd_cpu_ms": median forward, label: {"ms", "cpu_ms": medians, "faults": median
    minor page faults}}: wall time; the process's CPU time (all its threads: less sensitive to
    other processes' load than wall time, though spin-waiting threads count); faults = pages
    the process touched for the first time during the call (CPU memory)."""
    figures: dict = {k: [] for k in runs}
    fwd = []

    def timed(fn):
        sync(device)
        f0, c0, start = _minor_faults(), time.process_time(), time.perf_counter()
        fn()
        sync(device)
        return (time.perf_counter() - start, time.process_time() - c0, _minor_faults() - f0)

    for i in range(warmup + repeats):
        for key, run in runs.items():
            measured = timed(run)
            forward = timed(infer)
            if i >= warmup:
                figures[key].append(measured)
                fwd.append(forward)

    def med(rows, i):
        return statistics.median(r[i] for r in rows)

    out = {"fwd_ms": 1e3 * med(fwd, 0), "fwd_cpu_ms": 1e3 * med(fwd, 1)}
    for k, rows in figures.items():
        out[k] = {"ms": 1e3 * med(rows, 0), "cpu_ms": 1e3 * med(rows, 1),
                  "faults": med(rows, 2)}
    return out


def load_before_optim(directory: str):
    """DIR's ``zeroflow.optim`` (e.g. an older commit exported with ``git archive``) as a
    separate package, so that its steps can be timed in the same process as the current ones:
    a copy whose ``zeroflow.optim`` imports point to itself. Every other zeroflow module it
    imports comes from the current package, so each must be the same file in DIR (checked)."""
    import re
    import shutil
    import tempfile

    import zeroflow

    src = Path(directory) / "zeroflow" / "optim"
    here = Path(zeroflow.__file__).resolve().parent
    root = Path(tempfile.mkdtemp(prefix="zf_before_"))
    shutil.copytree(src, root / "zeroflow_before_optim")
    for path in (root / "zeroflow_before_optim").glob("*.py"):
        text = path.read_text()
        for module in set(re.findall(r"zeroflow\.(\w+)", text)) - {"optim"}:
            if (Path(directory) / "zeroflow" / f"{module}.py").read_bytes() != (
                    here / f"{module}.py").read_bytes():
                raise SystemExit(f"--before {directory}: its zeroflow/{module}.py differs from "
                                 "this tree's, so its optimizers cannot share this process")
        path.write_text(text.replace("zeroflow.optim", "zeroflow_before_optim"))
    sys.path.insert(0, str(root))
    import zeroflow_before_optim

    return zeroflow_before_optim


def interleaved(args) -> dict:
    """Every regime's full step and own work (the step with ``free_loss``), and INFTY's, in
    one process round-robin with inference forwards (timing only; memory comes from the
    rows' own processes). Keys: ``REGIME`` and ``REGIME/own``, ``infty`` and ``infty/own``."""
    from zeroflow import optim

    device = torch.device(args.device)
    torch.manual_seed(0)
    model, head, x, y, params = build_model(args.backbone, args.full, args.batch, device)
    losses = {"": forward_loss(model, head, x, y, args.full), "/own": free_loss(params)}
    numel = model_numel(model, head)
    builds = {"": optim}
    if args.before and args.rowset == "compare":
        builds["before:"] = load_before_optim(args.before)
    runs = {}
    for prefix, module in builds.items():
        for _label, regime in ROWSETS[args.rowset]:
            for suffix, loss_fn in losses.items():
                opt = module.build("zo-sgd", params, lr=1e-3,
                                   **zo_hparams(regime, args.q, args.momentum, numel))
                runs[prefix + regime + suffix] = (lambda o=opt, f=loss_fn: o.step(f))
    if args.infty:
        for suffix, loss_fn in losses.items():
            _, runs["infty" + suffix] = _infty_step(args, model, head, params, loss_fn)

    def infer():
        with torch.no_grad():
            losses[""]()

    return round_robin(runs, infer, device, args.repeats, args.warmup)


def measure(args) -> dict:
    """One row: 'inference' (memory reference), 'infty', or an optimizer name (with
    ``args.regime``: zo-sgd in that regime). Inference forwards are timed in the same process,
    interleaved with the steps, so the time ratio is in-run."""
    from zeroflow import optim

    device = torch.device(args.device)
    torch.manual_seed(0)
    model, head, x, y, params = build_model(args.backbone, args.full, args.batch, device)
    loss_fn = forward_loss(model, head, x, y, args.full)

    def infer():
        with torch.no_grad():
            loss_fn()

    if args.one == "inference":
        run, opt = infer, None
    elif args.one == "infty":
        opt, run = _infty_step(args, model, head, params, loss_fn)
    else:
        hp = ({} if optim.is_first_order(args.one) else {"q": args.q}) if not args.regime \
            else zo_hparams(args.regime, args.q, args.momentum, model_numel(model, head))
        opt = optim.build(args.one, params, lr=1e-3, **hp)

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
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - start

    def grads() -> bool:  # FO needs them
        return getattr(opt, "uses_backward", False)

    for p in params:
        p.requires_grad_(grads())
    growth = bool(args.regime or args.one == "infty")  # the steps' own peak over settled RSS
    if growth:
        for _ in range(2):
            infer()
        base_rss = _rss_mb()
        _reset_hwm()
    for _ in range(args.warmup):
        run()
        infer()
    if not growth:
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
    elif growth:
        peak = _hwm_mb()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    done = args.warmup + args.repeats
    passes = 1 if opt is None else opt.forward_passes / done
    row = {"name": args.one, "ms": 1e3 * statistics.median(step_times),
           "fwd_ms": 1e3 * statistics.median(fwd_times), "passes": passes, "peak_mb": peak}
    if device.type != "cuda":
        row["rise_mb"] = peak - base_rss
    return row


def _device_line(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    model = "CPU"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"load average {load} at start")


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
    parser.add_argument("--compare", action="store_true",
                        help="zo-sgd fast, lean and default beside INFTY: full steps and own "
                             "work round-robin in one process, memory growth each in its own")
    parser.add_argument("--momentum", type=float, default=0.0,
                        help="SGD momentum of the --regimes/--compare rows (INFTY's too)")
    parser.add_argument("--before", metavar="DIR",
                        help="also time zo-sgd with the zeroflow package in DIR")
    parser.add_argument("--infty", action="store_true",
                        help="also time INFTY's zo-sgd step (benchmarks/infty_reference.py)")
    parser.add_argument("--interleave", action="store_true",
                        help="with --regimes: also time every regime round-robin in one process")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--regime", help=argparse.SUPPRESS)
    parser.add_argument("--rowset", default="regimes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.q = args.q[0]
        print(json.dumps(interleaved(args) if args.one == "interleave" else measure(args)))
        return

    from zeroflow import optim

    def child(name, q, regime=None, path=None, repeats=None):
        cmd = [sys.executable, __file__, "--one", name, "--backbone", args.backbone,
               "--batch", str(args.batch), "--q", str(q),
               "--repeats", str(repeats or args.repeats),
               "--warmup", str(args.warmup), "--device", args.device,
               "--momentum", str(args.momentum), "--rowset", args.rowset] + (
                   ["--full"] if args.full else []) + (
                   ["--infty"] if args.infty else []) + (
                   ["--before", args.before] if args.before else []) + (
                   ["--regime", regime] if regime else [])
        env = dict(os.environ)
        if path:
            env["PYTHONPATH"] = os.path.abspath(path)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    if args.compare:
        args.rowset = "compare"
        compare(args, child)
        return
    if args.full or args.regimes:
        regimes(args, child)
        return

    print(f"# {args.backbone}, batch {args.batch}, adapters + cosine head trained; "
          f"{_device_line(args.device)}; torch {torch.__version__}")
    inf = child("inference", 1)
    cpu = not args.device.startswith("cuda")
    print(f"# inference forward: {inf['ms']:.2f} ms, peak {inf['peak_mb']:.0f} MB"
          + (f" (rise {inf['rise_mb']:.0f} MB)" if cpu else "")
          + "; each row times its own inference forwards (fwd ms) interleaved with its steps")
    header = ["optimizer", "q", "passes/step", "step ms", "fwd ms", "step/(2q fwd)",
              "step/(passes fwd)", "peak MB", "peak/inference"] + (["rise MB"] if cpu else [])
    _table_head(header)
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
            _table_row(cells)


def _table_head(header: list[str]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))


def _table_row(cells: list[str]) -> None:
    print("| " + " | ".join(cells) + " |", flush=True)


ROWSETS = {
    "regimes": [  # (label, --regime): the old default first
        ("seed-only, exact restore (off, exact)", "off-exact"),
        ("lean (off, subtractive restore)", "off-lean"),
        ("fast (on, exact restore)", "on-exact"),
        ("fast (on, subtractive restore)", "on-lean"),
        ("auto (model_numel given), exact restore", "auto-exact"),
    ],
    "compare": [
        ("fast (on, exact restore)", "on-exact"),
        ("fast (on, subtractive restore)", "on-lean"),
        ("lean (off, subtractive restore)", "off-lean"),
        ("default (auto, model_numel given, exact restore)", "auto-exact"),
    ],
}


def _rows(args) -> list[tuple[str, str | None]]:
    rows = list(ROWSETS[args.rowset])
    if args.before:
        rows.insert(0, (f"before: zeroflow from {args.before}", "before-exact"))
    if args.infty:
        rows.append(("INFTY ZeroFlow(zo_sgd), re-implemented", None))
    return rows


def _title(args) -> str:
    scope = "every tensor (full backbone) + head" if args.full else "adapters + cosine head"
    return (f"# {args.backbone}, batch {args.batch}, {scope} trained; zo-sgd, momentum "
            f"{args.momentum:g}, no weight decay; {_device_line(args.device)}; "
            f"torch {torch.__version__}")


def _growth_row(args, child, q, regime, repeats=None):
    if regime is None:
        return child("infty", q, repeats=repeats)
    if regime.startswith("before:"):  # --compare: DIR's code in the given regime
        return child("zo-sgd", q, regime.removeprefix("before:"), args.before, repeats)
    path = args.before if regime.startswith("before") else None
    return child("zo-sgd", q, regime, path, repeats)


def regimes(args, child) -> None:
    """zo-sgd's step regimes (and the old code, and INFTY, when asked) on one model."""
    rows = _rows(args)
    print(_title(args))
    inf = child("inference", 1, "inference-exact")
    print(f"# inference: {inf['ms']:.1f} ms per forward, growth {inf['rise_mb']:.0f} MB; "
          "each row times its own forwards (fwd ms) interleaved with its steps")
    _table_head(["regime", "q", "passes/step", "step ms", "fwd ms", "step/(2q fwd)",
                 "growth MB"])
    for q in args.q:
        for label, regime in rows:
            r = _growth_row(args, child, q, regime)
            _table_row([label, str(q), f"{r['passes']:.0f}", f"{r['ms']:.0f}",
                        f"{r['fwd_ms']:.0f}", f"{r['ms'] / (2 * q * r['fwd_ms']):.2f}",
                        f"{r['rise_mb']:.0f}"])
        if args.interleave:
            _print_round_robin(args, child, q, rows)


def _print_round_robin(args, child, q, rows) -> dict:
    """The one-process round-robin table (``interleaved``) for ``q``; returns its figures."""
    r = child("interleave", q)
    two = 2 * q * r["fwd_ms"]
    ref = r.get("infty", r[rows[0][1] or "infty"])
    ref_own = r.get("infty/own", r[(rows[0][1] or "infty") + "/own"])
    name = "INFTY" if "infty" in r else rows[0][0]
    two_cpu = 2 * q * r["fwd_cpu_ms"]
    print(f"\n# q = {q}, every row round-robin in one process ({args.repeats} rounds after "
          f"{args.warmup}, medians): inference forward {r['fwd_ms']:.0f} ms wall, "
          f"{r['fwd_cpu_ms']:.0f} ms CPU; own = the step with a loss that runs no forward; "
          f"beyond = step - 2q fwd - own; faults = minor page faults per step (fresh pages "
          f"touched); CPU columns: the process's CPU time, all threads")
    _table_head(["row", "step ms", "step/(2q fwd)", f"step/{name}", "own ms",
                 f"own/{name} own", "beyond ms", "faults/step", "faults/own",
                 "step CPU/(2q fwd CPU)", f"own CPU/{name} own CPU"])
    for label, regime in rows:
        key = "infty" if regime is None else regime
        if key not in r:
            continue
        step, own = r[key], r[key + "/own"]
        _table_row([label, f"{step['ms']:.0f}", f"{step['ms'] / two:.2f}",
                    f"{step['ms'] / ref['ms']:.2f}", f"{own['ms']:.0f}",
                    f"{own['ms'] / ref_own['ms']:.2f}",
                    f"{step['ms'] - two - own['ms']:.0f}", f"{step['faults']:.0f}",
                    f"{own['faults']:.0f}", f"{step['cpu_ms'] / two_cpu:.2f}",
                    f"{own['cpu_ms'] / ref_own['cpu_ms']:.2f}"])
    return r


COMPARE_GROWTH_STEPS = 3  # --compare's memory rows: warm-up steps + at most this many


def compare(args, child) -> None:
    """zeroflow's fast, lean and default zo-sgd beside INFTY's step: time round-robin in one
    process (full steps and own work), memory growth each row in its own process."""
    rows = [row for row in _rows(args) if not (row[1] or "").startswith("before")]
    if args.before:  # DIR's code in the same regimes, just before INFTY
        rows[-1:-1] = [(f"before ({args.before}): {label}", "before:" + regime)
                       for label, regime in ROWSETS["compare"]]
    print(_title(args))
    repeats = min(args.repeats, COMPARE_GROWTH_STEPS)  # the peak comes in the first steps
    for q in args.q:
        _print_round_robin(args, child, q, rows)
        inf = child("inference", q, "inference-exact", repeats=repeats)
        print(f"\n# q = {q}, memory: each row in its own process; growth = peak RSS during "
              f"{args.warmup + repeats} steps over the RSS once built and warmed up "
              f"(inference alone: {inf['rise_mb']:.0f} MB)")
        _table_head(["row", "growth MB", "growth - INFTY's MB"])
        growth = {label: _growth_row(args, child, q, regime, repeats)["rise_mb"]
                  for label, regime in rows}
        ref = growth[rows[-1][0]] if args.infty else None
        for label, _ in rows:
            _table_row([label, f"{growth[label]:.0f}",
                        "-" if ref is None else f"{growth[label] - ref:+.0f}"])
        print(flush=True)


if __name__ == "__main__":
    main()
