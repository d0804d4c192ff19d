"""Query-parallel SPSA scaling: ZO step time against K query workers, and Ray's share of it.

    python benchmarks/query_scaling.py                       # tiny ViT on CPU, Ray actors
    python benchmarks/query_scaling.py --processes           # the same halves in K processes
    python benchmarks/query_scaling.py --processes --device cuda \\
        --backbone vit_base_patch16_224.augreg_in21k         # a GPU machine (no Ray needed)

A "trial" replica in this process and K worker replicas run exactly what ``zeroflow run
query_workers=K`` runs (``zeroflow.distributed``): per step each worker gets its share of the q
direction seeds and the batch's indices, evaluates them, and returns scalars; this process merges
them and applies the update, and the workers repeat that apply. The baseline (K = 0) is the
in-process ``opt.step`` on the trial replica. What trains is what EASE trains on task 0: one
adapter set and a cosine head. With ``--device cuda`` worker k uses GPU k mod (number of GPUs).
A backbone other than ``tiny`` gets random weights (timing needs no pretrained ones).

Columns: step ms (median over ``--steps`` timed steps after ``--warmup``); speedup = baseline
step time / step time (the baseline runs with the same torch threads as each worker); ``in
calls`` = share of the step spent waiting for the workers' replies; ``overhead`` = the part of
that not spent in the slowest worker's own work (transport and scheduling); bytes per worker
per step (pickled request + reply).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zeroflow.batches import BatchSpec  # noqa: E402
from zeroflow.distributed.lockstep import LockStepPool  # noqa: E402
from zeroflow.distributed.replica import Replica  # noqa: E402
from zeroflow.steppers import training_closure  # noqa: E402


def _config(args, weights: str | None) -> dict:
    return dict(dataset="digits", method="ease", optimizer="zo-sgd", q=max(args.q),
                backbone=args.backbone, weights=weights, device=args.device,
                batch_size=args.batch, init_cls=2, increment=2, seed=0)


def _random_weights(backbone: str, directory: str) -> str | None:
    """A random-init weight file for a timm backbone, so no process needs a download."""
    if backbone == "tiny":
        return None
    import timm

    path = os.path.join(directory, "random_init.pth")
    torch.save(timm.create_model(backbone.split(".")[0], pretrained=False,
                                 num_classes=0).state_dict(), path)
    return path


def _worker_device(device: str, k: int) -> str:
    if device.startswith("cuda") and torch.cuda.device_count() > 1:
        return f"cuda:{k % torch.cuda.device_count()}"
    return device


def _serve(conn, config: dict, threads: int) -> None:
    """A worker process: one replica answering sync/step messages until 'stop'."""
    replica = Replica(config, threads)
    while True:
        kind, *payload = conn.recv()
        if kind == "stop":
            return
        conn.send(replica.sync(*payload) if kind == "sync" else replica.step(*payload))


class ProcessPool(LockStepPool):
    """The lock-step protocol over K torch.multiprocessing processes and pipes (no Ray)."""

    def __init__(self, configs: list[dict], threads: int):
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for config in configs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, config, threads), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        super().__init__(len(configs))

    def _sync(self, ks, task, tensors, states):
        for k in ks:
            self.conns[k].send(("sync", task, tensors, states))
        return {k: self.conns[k].recv() for k in ks}

    def _call(self, requests):
        for conn, request in zip(self.conns, requests):
            conn.send(("step", request))
        return [conn.recv() for conn in self.conns]

    def close(self):
        for conn, proc in zip(self.conns, self.procs):
            conn.send(("stop",))
            proc.join(timeout=30)


def _ray_pool(args, config: dict, k: int):
    from zeroflow.config import make_config
    from zeroflow.distributed.pool import QueryPool

    return QueryPool(make_config({**config, "query_workers": k, "worker_cpus": args.threads}))


def _sync_device(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--q", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in this process and in every worker (and Ray CPUs "
                             "per worker actor)")
    parser.add_argument("--processes", action="store_true",
                        help="K torch.multiprocessing processes instead of Ray actors")
    return parser


def measure(args) -> list[dict]:
    """One row per (q, K): step seconds with K workers, the in-process step (K = 0) it is
    compared with, speedup, the share of the step spent in calls and its overhead, and the
    pickled bytes per worker per step. This process's torch threads are restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # the baseline gets what each worker gets
    try:
        with tempfile.TemporaryDirectory(prefix="zf_query_scaling_") as tmp:
            return _measure(args, _config(args, _random_weights(args.backbone, tmp)))
    finally:
        torch.set_num_threads(threads)


def _measure(args, config: dict) -> list[dict]:
    trial = Replica(config)  # this process's replica: the trial's learner and optimizer
    trial.sync(0, {}, None)
    opt = trial.steppers[0].main
    spec = BatchSpec(0, 0, 0, list(range(args.batch)), 0)
    x, y = trial.batch(spec)
    closure = training_closure(trial.learner, opt, x, y, spec.dropout_seed)

    def timed(step) -> float:
        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.steps):
            _sync_device(args.device)
            start = time.perf_counter()
            step()
            _sync_device(args.device)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    base = {}
    for q in args.q:
        opt.q = q
        base[q] = timed(lambda: opt.step(closure))
    rows = []
    for k in args.k:
        if args.processes:
            configs = [{**config, "device": _worker_device(args.device, i)} for i in range(k)]
            pool = ProcessPool(configs, threads=args.threads)
        else:
            pool = _ray_pool(args, config, k)
        try:
            pool.start_task(0, trial.learner, trial.steppers)
            for q in args.q:
                opt.q = q
                before = dict(vars(pool.stats))
                t = timed(lambda pool=pool: pool.step(0, opt, closure, spec))
                st = {key: value - before[key] for key, value in vars(pool.stats).items()}
                rows.append({
                    "q": q, "k": k, "step_s": t, "base_s": base[q], "speedup": base[q] / t,
                    "in_calls": st["ray_seconds"] / st["step_seconds"],
                    "overhead": (st["ray_seconds"] - st["worker_seconds"]) / st["step_seconds"],
                    "bytes_per_worker_step": (st["request_bytes"] + st["reply_bytes"])
                    / st["messages"]})
            pool.finish_task()
        finally:
            pool.close()
    return sorted(rows, key=lambda r: (r["q"], r["k"]))


def table(rows: list[dict]) -> list[str]:
    """The rows as Markdown table lines."""
    lines = ["| q | K | step ms | K=0 step ms | speedup | in calls | overhead | B/worker/step |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['q']} | {r['k']} | {r['step_s'] * 1e3:.1f} | "
                     f"{r['base_s'] * 1e3:.1f} | {r['speedup']:.2f} | {r['in_calls']:.0%} | "
                     f"{r['overhead']:.0%} | {r['bytes_per_worker_step']:.0f} |")
    return lines


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    rows = measure(args)
    mode = "processes" if args.processes else "Ray actors"
    print(f"backbone {args.backbone}, device {args.device}, batch {args.batch}, {mode}, "
          f"torch threads {args.threads} here and per worker, {os.cpu_count()} CPUs")
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
