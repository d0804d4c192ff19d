"""The GPU check in one command: ZO step times, peak memory (the paper's Table 2 analogue), query
scaling and the CUDA assertions of ``tests/test_gpu.py``, written as a Markdown report and JSON.

    PYTHONPATH=. python benchmarks/gpu_check.py --out DIR            # one GPU, <= 8 minutes
    PYTHONPATH=. python benchmarks/gpu_check.py --out DIR --quick    # a second try, <= 3 minutes
    PYTHONPATH=. python benchmarks/gpu_check.py --out DIR --cpu-smoke
                                       # the same code paths on CPU with the tiny backbone (CI)

Needs torch and timm only (plus scikit-learn for the query workers' digits data), runs from a
source checkout with nothing installed, no network, no Ray, MLflow or pytest. The backbone is
the ``vit_base_patch16_224.augreg_in21k`` architecture with random weights (timing and memory
need no pretrained ones). What it measures, each section written to DIR as soon as it is done
(``report.md`` and ``report.json``), so that a run cut short keeps what it had:

1. environment: device, GPU count, torch, CUDA and cuDNN versions, TF32 flags;
2. the assertions of ``tests/test_gpu.py`` (bit-exact restore on the device, a ZO step's peak
   memory within its documented bound per regime, in-place draws equal fresh ones), pass/fail;
3. peak memory (CUDA ``max_memory_allocated``) of inference, FO-SGD, FO-Adam, zo-sgd in each
   step regime and Forward-Grad, on one adapter set and on the full backbone, with the ratios
   that the paper's Table 2 reports (FO 12.08 GB vs ZO 2.41 GB);
4. step time over 2q inference forwards (one jvp per direction for Forward-Grad: step / q
   forwards), per regime, q in {1, 4, 16}, batch 32 and 64, fp32 and bf16 (``torch.autocast``
   around the forward; the trainable tensors stay fp32), adapters and full backbone, every row
   of a cell round-robin in one process (``optim_step.round_robin``);
5. query scaling (after the q = 1 timings, before the larger q): K in {1, 2, 4} worker
   processes sharing the GPU (one per GPU when there are
   several), speedup over the in-process step and bytes per worker per step
   (``query_scaling.measure``);
6. what was skipped to stay within the time budget, and why.

Every row runs under a time budget (``--budget``; 420 s, quick 150 s): a cell whose estimate
(from the forward time measured first) does not fit what is left is skipped and listed. A
cell that fails is reported with its error and the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
for _path in (str(HERE.parent), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import optim_step  # noqa: E402

from zeroflow import optim  # noqa: E402

PAPER_TABLE2 = {"fo_gb": 12.08, "zo_gb": 2.41}  # ZeroFlow paper, Table 2 (FO vs ZO memory)
VIT_B = "vit_base_patch16_224.augreg_in21k"
ZO_NAMES = [n for n in optim.NAMES if not optim.is_first_order(n)]
#: zo-sgd's step regimes (``direction_buffer``-``restore``) and their names in the report
REGIMES = {"on-exact": "fast", "on-lean": "fast, subtractive", "off-lean": "lean",
           "off-exact": "seed-only, exact"}


@dataclass
class Plan:
    """What one mode measures."""

    backbone: str
    device: str
    batches: tuple[int, ...]
    dtypes: tuple[str, ...]
    qs: tuple[int, ...]
    scopes: tuple[str, ...] = ("adapters", "full")
    repeats: int = 3
    warmup: int = 1
    memory_batch: int = 32
    memory_steps: int = 2
    query_qs: tuple[int, ...] = (4, 16)
    query_ks: tuple[int, ...] = (1, 2, 4)
    query_batch: int = 32
    query_steps: int = 3
    budget_s: float = 420.0


PLANS = {
    "full": Plan(VIT_B, "cuda", (32, 64), ("fp32", "bf16"), (1, 4, 16)),
    "quick": Plan(VIT_B, "cuda", (32,), ("fp32", "bf16"), (1, 4, 16), repeats=2,
                  query_qs=(16,), query_ks=(1, 2, 4), query_steps=2, budget_s=150.0),
    "cpu-smoke": Plan("tiny", "cpu", (4,), ("fp32", "bf16"), (1, 4), repeats=1, warmup=1,
                      memory_batch=4, memory_steps=1, query_qs=(4,), query_ks=(2,),
                      query_batch=4, query_steps=1, budget_s=600.0),
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


# ------------------------------------------------------------------------------ budget

class Budget:
    """A deadline shared by the sections: ``fits(estimate)`` says whether a piece of work of
    ``estimate`` seconds still fits; ``skip`` records one that did not (or failed)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.clock, self.end = clock, clock() + seconds
        self.skipped: list[dict] = []

    def left(self) -> float:
        return self.end - self.clock()

    def fits(self, estimate: float) -> bool:
        return estimate <= self.left()

    def skip(self, section: str, what: str, why: str) -> None:
        self.skipped.append({"section": section, "what": what, "why": why})


# ------------------------------------------------------------------------------ assertions
# tests/test_gpu.py calls these on CUDA; this script calls them on its device, without pytest.

def mlp(device, seed: int = 0) -> torch.nn.Module:
    """The assertions' model: an MLP whose largest tensor is well below its total."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # model init only; optimizers use their own generators
        model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.GELU(),
                                    torch.nn.Linear(2048, 2048), torch.nn.GELU(),
                                    torch.nn.Linear(2048, 10))
    return model.to(device)


def mlp_batch(device):
    g = torch.Generator(device=device).manual_seed(1)
    return (torch.randn(256, 512, device=device, generator=g),
            torch.randint(0, 10, (256,), device=device, generator=g))


def check_restore_bit_exact(name: str, device) -> None:
    """A ZO optimizer's evaluate half (q = 4) leaves every parameter bit for bit as it was."""
    model = mlp(device)
    x, y = mlp_batch(device)
    before = [p.detach().clone() for p in model.parameters()]
    opt = optim.build(name, model.parameters(), q=4)
    opt.evaluate(lambda: F.cross_entropy(model(x), y), opt.direction_seeds())
    changed = [i for i, (p, b) in enumerate(zip(model.parameters(), before))
               if not torch.equal(p.detach(), b)]
    assert not changed, f"{name}: tensors {changed} differ after evaluate"


def check_in_place_draws(device) -> None:
    """Directions drawn into reused storage (the fast regime) are the fresh draws on this
    device, for both perturbations (the fresh draw is ``randn`` / ``randint(0, 2)``)."""
    from zeroflow.optim.perturb import DirectionSampler
    from zeroflow.seeding import derive_seed

    like = torch.zeros(1000, 37, device=device)
    for perturbation in ("gaussian", "rademacher"):
        sampler = DirectionSampler(perturbation)
        out = torch.empty_like(like)
        sampler.block(5, 1, like, out=out)
        gen = torch.Generator(device=device).manual_seed(derive_seed(5, 1))
        if perturbation == "gaussian":
            ref = torch.randn(like.shape, generator=gen, device=device)
        else:
            ref = torch.randint(0, 2, like.shape, generator=gen, device=device).float() * 2 - 1
        assert torch.equal(out, ref), f"{perturbation}: in-place draw differs from a fresh one"


def _peak_extra(fn, device) -> int:
    """Bytes allocated at the peak of ``fn()`` above what was allocated before it."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def check_zo_peak_memory(regime: str, device) -> None:
    """zo-sgd (q = 4, no momentum) in ``regime``: the optimizer's whole footprint (kept buffers
    included) at a step's peak is at most inference plus what the docs promise: the swapped-in
    set for exact restore, one direction + one estimate for the fast regime, a few blocks of
    the largest tensor; FO-SGD's is above inference plus the parameters (gradients and saved
    activations)."""
    model = mlp(device)
    x, y = mlp_batch(device)

    def loss():
        return F.cross_entropy(model(x), y)

    params = list(model.parameters())
    largest = max(p.numel() * p.element_size() for p in params)
    trainable = sum(p.numel() * p.element_size() for p in params)
    with torch.no_grad():
        inference = _peak_extra(loss, device)
    buffer, restore = regime.split("-")
    exact = restore == "exact"

    def zo_steps():
        opt = optim.build("zo-sgd", params, q=4, momentum=0.0, weight_decay=0.0,
                          exact_restore=exact, direction_buffer=buffer)
        opt.step(loss)  # the first step allocates the kept buffers: they count
        opt.step(loss)

    zo = _peak_extra(zo_steps, device)
    kept = (trainable if exact else 0) + (2 * trainable if buffer == "on" else 0)
    allowed = inference + kept + 3 * largest + (1 << 20)
    assert zo <= allowed, f"{regime}: peak +{zo} B > allowed {allowed} B " \
        f"(inference {inference}, kept {kept}, largest {largest})"

    fo = optim.build("fo-sgd", params, momentum=0.0, weight_decay=0.0)

    def fo_closure():
        fo.zero_grad(set_to_none=True)
        out = loss()
        out.backward()
        return out

    fo.step(fo_closure)
    fo_peak = _peak_extra(lambda: fo.step(fo_closure), device)
    assert fo_peak > inference + trainable, f"FO-SGD peak +{fo_peak} B is not above " \
        f"inference {inference} + parameters {trainable}"


def assertions(device) -> list[tuple[str, Callable[[], None] | None, str]]:
    """(name, check, why skipped) for every assertion of ``tests/test_gpu.py`` on ``device``
    (check None: cannot run there)."""
    cuda = torch.device(device).type == "cuda"
    out = [(f"restore bit for bit: {n}", lambda n=n: check_restore_bit_exact(n, device), "")
           for n in ZO_NAMES]
    out.append(("in-place draws equal fresh draws", lambda: check_in_place_draws(device), ""))
    for regime in REGIMES:
        out.append((f"zo-sgd peak memory within bound: {regime}",
                    (lambda r=regime: check_zo_peak_memory(r, device)) if cuda else None,
                    "" if cuda else "needs CUDA memory statistics"))
    return out


def run_assertions(device, budget: Budget) -> list[dict]:
    rows = []
    for name, check, why in assertions(device):
        if check is None:
            rows.append({"check": name, "result": "skipped", "detail": why})
            continue
        try:
            check()
            rows.append({"check": name, "result": "pass", "detail": ""})
        except AssertionError as err:
            rows.append({"check": name, "result": "FAIL", "detail": str(err)})
        except Exception as err:  # noqa: BLE001 - report and go on: the GPU time is precious
            rows.append({"check": name, "result": "ERROR", "detail": _one_line(err)})
        _free(device)
    return rows


# ------------------------------------------------------------------------------ helpers

def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300]}" if text else type(err).__name__


def _free(device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


class PeakMeter:
    """Peak memory of what runs between ``start()`` and ``peak()``: CUDA max allocated on a
    GPU; on CPU the process's peak RSS (VmHWM, reset at start), which also counts the
    allocator's slack. Both in bytes, absolute and above the start."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def start(self) -> None:
        _free(self.device)
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = optim_step._rss_mb() * 2**20
            optim_step._reset_hwm()

    def peak(self) -> tuple[float, float]:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = optim_step._hwm_mb() * 2**20
        return peak, peak - self.base


def _zo(name: str, params, q: int, regime: str | None, numel: int):
    hp = {"q": q, "model_numel": numel}
    if regime is not None:
        buffer, restore = regime.split("-")
        hp.update(direction_buffer=buffer, exact_restore=restore == "exact")
    return optim.build(name, params, lr=1e-3, **hp)


def _step_fn(opt, loss_fn):
    """One step of ``opt`` on ``loss_fn`` (FO: the closure runs backward)."""
    if not opt.uses_backward:
        return lambda: opt.step(loss_fn)

    def closure():
        opt.zero_grad(set_to_none=True)
        out = loss_fn()
        out.backward()
        return out.detach()

    return lambda: opt.step(closure)


class Bench:
    """One model (backbone + one adapter set + head) per batch size, built on first use."""

    def __init__(self, plan: Plan):
        self.plan, self.device = plan, torch.device(plan.device)
        self._cache: dict[int, tuple] = {}
        self.fwd_cache: dict[tuple, float] = {}  # (batch, dtype, scope) -> forward ms

    def model(self, batch: int):
        if batch not in self._cache:
            self._cache.clear()
            _free(self.device)
            torch.manual_seed(0)
            model, head, x, y, _ = optim_step.build_model(self.plan.backbone, False, batch,
                                                          self.device)
            self._cache[batch] = (model, head, x, y)
        return self._cache[batch]

    def setup(self, batch: int, scope: str, dtype: str):
        """(trainable tensors, loss closure, model_numel) for one cell."""
        model, head, x, y = self.model(batch)
        full = scope == "full"
        params = (list(model.backbone.parameters()) if full
                  else list(model.adapter_sets[0].parameters())) + list(head.parameters())
        loss = optim_step.forward_loss(model, head, x, y, full, DTYPES[dtype])
        numel = optim_step.model_numel(model, head) - (
            sum(p.numel() for p in model.adapter_sets[0].parameters()) if full else 0)
        return params, loss, numel

    def forward_ms(self, loss, n: int = 3) -> float:
        times = []
        for i in range(n + 1):
            optim_step.sync(self.device)
            start = time.perf_counter()
            with torch.no_grad():
                loss()
            optim_step.sync(self.device)
            if i:
                times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)


# ------------------------------------------------------------------------------ sections

def run_memory(bench: Bench, budget: Budget) -> list[dict]:
    """Peak memory per optimizer and scope at the plan's memory batch, fp32."""
    plan, meter, rows = bench.plan, PeakMeter(bench.device), []
    batch = plan.memory_batch
    names = ["inference", "fo-sgd", "fo-adam"] + [f"zo-sgd {r}" for r in REGIMES] + [
        "zo-sgd default", "forward-grad"]
    for scope in plan.scopes:
        params, loss, numel = bench.setup(batch, scope, "fp32")
        fwd = bench.forward_ms(loss)
        for name in names:
            estimate = (plan.memory_steps + 1) * 5 * fwd / 1e3 + 1.0
            if not budget.fits(estimate):
                budget.skip("memory", f"{scope} {name}", f"time: ~{estimate:.0f} s needed, "
                            f"{budget.left():.0f} s left")
                continue
            row = {"scope": scope, "row": name, "batch": batch,
                   "trainable": sum(p.numel() for p in params)}
            try:
                row.update(_memory_row(name, params, loss, numel, meter, plan.memory_steps))
            except Exception as err:  # noqa: BLE001
                row["error"] = _one_line(err)
            for p in params:
                p.requires_grad_(False)
                p.grad = None
            rows.append(row)
            _free(bench.device)
    return rows


def _memory_row(name, params, loss, numel, meter: PeakMeter, steps: int) -> dict:
    meter.start()
    if name == "inference":
        for _ in range(steps + 1):
            with torch.no_grad():
                loss()
        peak, rise = meter.peak()
        return {"peak_bytes": peak, "rise_bytes": rise}
    if name.startswith("zo-sgd"):
        regime = name.split()[1]
        opt = _zo("zo-sgd", params, 1, None if regime == "default" else regime, numel)
        label = {"regime": ("fast" if opt.buffered else "seed-only")
                 + (", exact" if opt.exact_restore else ", subtractive")}
    else:
        opt = optim.build(name, params, lr=1e-3, **({"model_numel": numel}
                                                     if name == "forward-grad" else {}))
        label = {}
    for p in params:
        p.requires_grad_(opt.uses_backward)
    run = _step_fn(opt, loss)
    for _ in range(steps + 1):
        run()
    peak, rise = meter.peak()
    del opt, run
    return {"peak_bytes": peak, "rise_bytes": rise, **label}


def run_timing(bench: Bench, budget: Budget, qs: tuple[int, ...], rows: list[dict]) -> list:
    """Step / forwards per cell, appended to ``rows``; q outermost, so that a short budget
    keeps every setting at q = 1 before any at q = 16."""
    plan = bench.plan
    fwd_cache = bench.fwd_cache
    for q in qs:
        for batch in plan.batches:
            for dtype in plan.dtypes:
                for scope in plan.scopes:
                    cell = f"batch {batch} {dtype} {scope} q={q}"
                    try:
                        params, loss, numel = bench.setup(batch, scope, dtype)
                        key = (batch, dtype, scope)
                        if key not in fwd_cache:
                            fwd_cache[key] = bench.forward_ms(loss)
                        fwd = fwd_cache[key]
                        # per round: 2q passes per regime, ~3q forwards' worth for the jvps,
                        # one inference forward after every row
                        estimate = (plan.warmup + plan.repeats) * (
                            (2 * q * len(REGIMES) + 3 * q + len(REGIMES) + 1) * fwd) / 1e3
                        if not budget.fits(estimate):
                            budget.skip("timing", cell, f"time: ~{estimate:.0f} s needed, "
                                        f"{budget.left():.0f} s left")
                            continue
                        rows.append({"batch": batch, "dtype": dtype, "scope": scope, "q": q,
                                     **_timing_cell(bench, params, loss, numel, q)})
                    except Exception as err:  # noqa: BLE001
                        rows.append({"batch": batch, "dtype": dtype, "scope": scope, "q": q,
                                     "error": _one_line(err)})
                    _free(bench.device)
    return rows


def _timing_cell(bench: Bench, params, loss, numel: int, q: int) -> dict:
    plan = bench.plan
    runs, default = {}, None
    for regime in REGIMES:
        opt = _zo("zo-sgd", params, q, regime, numel)
        runs[regime] = _step_fn(opt, loss)
    auto = _zo("zo-sgd", params, q, None, numel)
    default = ("on" if auto.buffered else "off") + "-exact"
    del auto
    runs["forward-grad"] = _step_fn(optim.build("forward-grad", params, lr=1e-3, q=q,
                                                model_numel=numel), loss)
    errors = {}
    for key, run in list(runs.items()):  # the first warm-up step, alone: a row that fails
        try:  # is reported without losing the cell
            run()
        except Exception as err:  # noqa: BLE001
            errors[key] = _one_line(err)
            del runs[key]

    def infer():
        with torch.no_grad():
            loss()

    r = optim_step.round_robin(runs, infer, bench.device, plan.repeats, plan.warmup - 1)
    fwd = r.pop("fwd_ms")
    r.pop("fwd_cpu_ms")
    out = {"fwd_ms": fwd, "default": default, "step_ms": {}, "ratio": {}, "errors": errors}
    for key, value in r.items():
        passes = q if key == "forward-grad" else 2 * q
        out["step_ms"][key] = value["ms"]
        out["ratio"][key] = value["ms"] / (passes * fwd)
    return out


def run_query(plan: Plan, budget: Budget) -> list[dict]:
    """query_scaling.measure with worker processes (no Ray)."""
    import query_scaling

    estimate = 20.0 * len(plan.query_ks) + 10.0
    if not budget.fits(estimate):
        budget.skip("query scaling", "all", f"time: ~{estimate:.0f} s needed, "
                    f"{budget.left():.0f} s left")
        return []
    args = query_scaling.parser().parse_args(
        ["--processes", "--backbone", plan.backbone, "--device", plan.device,
         "--batch", str(plan.query_batch), "--steps", str(plan.query_steps), "--warmup", "1",
         "--threads", "1",
         "--q", *map(str, plan.query_qs), "--k", *map(str, plan.query_ks)])
    return query_scaling.measure(args)


# ------------------------------------------------------------------------------ report

def environment(plan: Plan, mode: str) -> dict:
    import timm

    env = {"mode": mode, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
           "python": platform.python_version(), "torch": torch.__version__,
           "timm": timm.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version(), "device": plan.device,
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "load_average": list(os.getloadavg())}
    if plan.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_count=torch.cuda.device_count(),
                   gpu_memory_gb=round(props.total_memory / 2**30, 1),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                   tf32_cudnn=torch.backends.cudnn.allow_tf32)
    else:
        env["gpu"] = None
    with contextlib.suppress(Exception):
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                                       capture_output=True, text=True,
                                       check=True).stdout.strip()
    return env


def _gb(b: float) -> str:
    return f"{b / 2**30:.2f}"


def markdown(report: dict) -> str:
    env, plan = report["environment"], report["plan"]
    lines = [f"# GPU check ({env['mode']})", "",
             f"Command: `{report['command']}`", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env.items()]
    lines += ["", f"Backbone `{plan['backbone']}` (random weights), device `{plan['device']}`; "
              f"{report['elapsed_s']:.0f} s of a {plan['budget_s']:.0f} s budget.", ""]

    lines += ["## Assertions (tests/test_gpu.py, without pytest)", "",
              "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {r['check']} | {r['result']} | {r['detail']} |"
              for r in report.get("assertions", [])]

    memory = report.get("memory", [])
    unit = "CUDA max allocated" if plan["device"] == "cuda" else "peak RSS (CPU)"
    lines += ["", f"## Peak memory, batch {plan['memory_batch']}, fp32 ({unit}, GB)", "",
              "Peak = the whole process's figure during the steps (model, batch, optimizer "
              "state and buffers included); rise = above the model and batch alone.", "",
              "| scope | row | trainable | peak GB | rise GB | peak / inference |",
              "|---|---|---|---|---|---|"]
    inference = {r["scope"]: r.get("peak_bytes") for r in memory if r["row"] == "inference"}
    for r in memory:
        if "error" in r:
            lines.append(f"| {r['scope']} | {r['row']} | {r['trainable']:,} | error: "
                         f"{r['error']} | | |")
            continue
        ref = inference.get(r["scope"])
        name = r["row"] + (f" ({r['regime']})" if "regime" in r else "")
        ratio = f"{r['peak_bytes'] / ref:.2f}" if ref else "-"
        lines.append(f"| {r['scope']} | {name} | {r['trainable']:,} | {_gb(r['peak_bytes'])} "
                     f"| {_gb(r['rise_bytes'])} | {ratio} |")
    for scope, ratio in report.get("table2", {}).items():
        lines.append(f"\nTable 2 analogue, {scope}: FO-SGD / zo-sgd default = {ratio:.2f}x "
                     f"(paper: {PAPER_TABLE2['fo_gb']} / {PAPER_TABLE2['zo_gb']} GB = "
                     f"{PAPER_TABLE2['fo_gb'] / PAPER_TABLE2['zo_gb']:.2f}x).")

    lines += ["", "## Step time / forward passes", "",
              "Each cell: every row round-robin in one process with an inference forward after "
              "each (medians). zo-sgd: step / (2q forwards); forward-grad: step / (q forwards); "
              "`default` names the regime a trial's zo-sgd gets there.", "",
              "| batch | dtype | scope | q | fwd ms | " + " | ".join(REGIMES.values())
              + " | forward-grad | default |", "|---" * (len(REGIMES) + 7) + "|"]
    for r in report.get("timing", []):
        head = f"| {r['batch']} | {r['dtype']} | {r['scope']} | {r['q']} | "
        if "error" in r:
            lines.append(head + f"error: {r['error']} |")
            continue
        cells = [f"{r['ratio'][k]:.2f}" if k in r["ratio"] else f"error: {r['errors'][k]}"
                 for k in list(REGIMES) + ["forward-grad"]]
        lines.append(head + f"{r['fwd_ms']:.1f} | " + " | ".join(cells)
                     + f" | {REGIMES[r['default']]} |")

    lines += ["", "## Query scaling (worker processes sharing the device)", ""]
    if "query_error" in report:
        lines.append(f"error: {report['query_error']}")
    elif report.get("query"):
        import query_scaling

        lines += query_scaling.table(report["query"])
    lines += ["", "## Skipped", ""]
    skipped = report.get("skipped", [])
    lines += [f"- {s['section']}: {s['what']} ({s['why']})" for s in skipped] or ["- nothing"]
    return "\n".join(lines) + "\n"


def table2(memory: list[dict]) -> dict:
    """FO-SGD peak over the default zo-sgd's, per scope (the paper's Table 2 ratio)."""
    out = {}
    for scope in {r["scope"] for r in memory}:
        rows = {r["row"]: r for r in memory if r["scope"] == scope and "error" not in r}
        if "fo-sgd" in rows and "zo-sgd default" in rows:
            out[scope] = rows["fo-sgd"]["peak_bytes"] / rows["zo-sgd default"]["peak_bytes"]
    return out


def write(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "report.md").write_text(markdown(report))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for report.md/.json")
    parser.add_argument("--quick", action="store_true", help="the <= 3 minute plan")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="the same code paths on CPU with the tiny backbone")
    parser.add_argument("--budget", type=float, help="seconds (default: the plan's)")
    args = parser.parse_args(argv)
    mode = "cpu-smoke" if args.cpu_smoke else "quick" if args.quick else "full"
    plan = PLANS[mode]
    if args.budget is not None:
        plan = replace(plan, budget_s=args.budget)
    if plan.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu-smoke for the CPU check", file=sys.stderr)
        return 2
    if mode == "cpu-smoke":  # a check of the code paths, not a measurement: one thread
        torch.set_num_threads(1)  # keeps tiny ops off OpenMP barriers on a loaded machine
    started = time.monotonic()
    budget = Budget(plan.budget_s)
    report = {"command": " ".join(["python", "benchmarks/gpu_check.py"] + list(
        argv if argv is not None else sys.argv[1:])), "plan": asdict(plan),
        "environment": environment(plan, mode), "skipped": budget.skipped}

    def section(name: str, fn) -> None:
        print(f"[{time.monotonic() - started:6.1f} s, cpu {time.process_time():6.1f} s] "
              f"{name}", flush=True)
        try:
            report[name] = fn()
        except Exception as err:  # noqa: BLE001 - keep the other sections
            report[f"{name}_error"] = _one_line(err)
        report["elapsed_s"] = time.monotonic() - started
        write(args.out, report)

    bench = Bench(plan)
    section("assertions", lambda: run_assertions(plan.device, budget))
    section("memory", lambda: run_memory(bench, budget))
    report["table2"] = table2(report.get("memory", []))
    timing: list[dict] = []  # q = 1 everywhere, then query scaling, then the larger q
    section("timing", lambda: run_timing(bench, budget, plan.qs[:1], timing))
    section("query", lambda: run_query(plan, budget))
    section("timing", lambda: run_timing(bench, budget, plan.qs[1:], timing))
    failed = [r for r in report.get("assertions", []) if r["result"] in ("FAIL", "ERROR")]
    print(f"wrote {args.out / 'report.md'} and report.json in "
          f"{time.monotonic() - started:.0f} s; assertions: "
          f"{'all passed' if not failed else f'{len(failed)} failed'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
