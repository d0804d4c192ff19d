"""``benchmarks/gpu_check.py --cpu-smoke`` runs every code path it can on CPU (the tiny
backbone) and writes both report files, without Ray, MLflow or pytest importable (the GPU
image has none of them); its time budget skips what does not fit and says so."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

BLOCKED = ("ray", "mlflow", "pytest")


def run_gpu_check(out: Path, *extra: str) -> subprocess.CompletedProcess:
    """benchmarks/gpu_check.py --cpu-smoke in a fresh process where Ray, MLflow and pytest
    cannot be imported, from the source checkout (PYTHONPATH=.)."""
    code = (f"import runpy, sys\nfor m in {BLOCKED!r}:\n    sys.modules[m] = None\n"
            f"sys.argv = ['gpu_check.py', '--cpu-smoke', '--out', {str(out)!r}, *{extra!r}]\n"
            f"runpy.run_path({str(ROOT / 'benchmarks' / 'gpu_check.py')!r}, "
            "run_name='__main__')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)


def vit_numel(img_size, patch_size, embed_dim, depth, mlp_ratio, **_) -> int:
    """Parameters of a timm ViT (class token, no classifier) counted from its architecture:
    patch embedding, class token, position embedding, depth x (two norms, qkv, projection,
    two MLP layers), final norm."""
    d, hidden, tokens = embed_dim, int(embed_dim * mlp_ratio), (img_size // patch_size) ** 2 + 1
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (
        hidden * d + d)
    return (3 * patch_size**2 * d + d) + d + tokens * d + depth * block + 2 * d


def memory_rows(plan) -> set[tuple[str, str]]:
    """(scope, row) of every peak-memory row the plan asks for."""
    names = ["inference", "fo-sgd", "fo-adam", "forward-grad", "zo-sgd default"] + [
        f"zo-sgd {r}" for r in gpu_check.REGIMES]
    return {(scope, name) for scope in plan.scopes for name in names}


def test_cpu_smoke_writes_the_report_without_ray_mlflow_or_pytest(tmp_path):
    done = run_gpu_check(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    markdown = (tmp_path / "report.md").read_text()
    plan = gpu_check.PLANS["cpu-smoke"]

    results = {r["check"]: r["result"] for r in report["assertions"]}
    assert len(results) == len(gpu_check.assertions("cpu"))
    assert {v for k, v in results.items() if "peak memory" not in k} == {"pass"}
    assert {v for k, v in results.items() if "peak memory" in k} == {"skipped"}

    memory = report["memory"]
    assert not [r for r in memory if "error" in r]
    assert {(r["scope"], r["row"]) for r in memory} == memory_rows(plan)
    assert all(r["peak_bytes"] > 0 for r in memory)
    # the full scope trains every backbone tensor and the cosine head (10 classes x dim + sigma)
    from zeroflow.models.backbone import TINY_VIT_CONFIG

    dim = TINY_VIT_CONFIG["embed_dim"]
    full = {r["trainable"] for r in memory if r["scope"] == "full"}
    assert full == {vit_numel(**TINY_VIT_CONFIG) + 10 * dim + 1}
    assert set(report["table2"]) == set(plan.scopes)

    timing = report["timing"]
    assert {(r["batch"], r["dtype"], r["scope"], r["q"]) for r in timing} == {
        (b, d, s, q) for b in plan.batches for d in plan.dtypes for s in plan.scopes
        for q in plan.qs}
    for row in timing:
        assert "error" not in row and not row["errors"], row
        assert set(row["ratio"]) == set(gpu_check.REGIMES) | {"forward-grad"}
        assert all(0 < v < float("inf") for v in row["ratio"].values())
        assert row["default"] in gpu_check.REGIMES

    assert [(r["q"], r["k"]) for r in report["query"]] == [
        (q, k) for q in plan.query_qs for k in plan.query_ks]
    assert all(r["bytes_per_worker_step"] > 0 and r["speedup"] > 0 for r in report["query"])
    adapters = min(r["trainable"] for r in memory)  # seeds and scalars, never a tensor
    assert all(r["bytes_per_worker_step"] < 4 * adapters for r in report["query"])
    assert report["skipped"] == []
    for heading in ("## Assertions", "## Peak memory", "## Step time", "## Query scaling",
                    "## Skipped"):
        assert heading in markdown
    assert report["environment"]["torch"] == torch.__version__
    assert report["environment"]["gpu"] is None


def test_a_spent_budget_skips_every_measurement_and_says_so(tmp_path):
    done = run_gpu_check(tmp_path, "--budget", "0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert {r["result"] for r in report["assertions"]} == {"pass", "skipped"}
    assert report["memory"] == [] and report["timing"] == [] and report["query"] == []
    plan = gpu_check.PLANS["cpu-smoke"]
    skipped = {(s["section"], s["what"]) for s in report["skipped"]}
    assert ("query scaling", "all") in skipped
    assert {w for s, w in skipped if s == "timing"} == {
        f"batch {b} {d} {s} q={q}" for b in plan.batches for d in plan.dtypes
        for s in plan.scopes for q in plan.qs}
    assert {tuple(w.split(" ", 1)) for s, w in skipped if s == "memory"} == memory_rows(plan)
    markdown = (tmp_path / "report.md").read_text()
    assert all(f"- {s['section']}: {s['what']} (" in markdown for s in report["skipped"])


def test_budget_skips_work_that_does_not_fit_and_records_why():
    now = [100.0]
    budget = gpu_check.Budget(60.0, clock=lambda: now[0])
    assert budget.fits(60.0) and not budget.fits(60.5)
    now[0] += 50.0
    assert budget.left() == 10.0 and budget.fits(10.0) and not budget.fits(11.0)
    budget.skip("timing", "batch 64 fp32 full q=16", "time")
    assert budget.skipped == [{"section": "timing", "what": "batch 64 fp32 full q=16",
                               "why": "time"}]


def test_markdown_lists_skipped_work_and_errors():
    report = {"command": "python benchmarks/gpu_check.py --out x", "elapsed_s": 1.0,
              "plan": {"backbone": "tiny", "device": "cpu", "budget_s": 10.0,
                       "memory_batch": 4},
              "environment": {"mode": "cpu-smoke"}, "assertions": [
                  {"check": "c", "result": "FAIL", "detail": "d"}],
              "timing": [{"batch": 4, "dtype": "fp32", "scope": "full", "q": 1,
                          "error": "RuntimeError: boom"}],
              "skipped": [{"section": "timing", "what": "batch 4 fp32 full q=4",
                           "why": "time: ~9 s needed, 2 s left"}]}
    text = gpu_check.markdown(report)
    assert "| c | FAIL | d |" in text
    assert "error: RuntimeError: boom" in text
    assert "- timing: batch 4 fp32 full q=4 (time: ~9 s needed, 2 s left)" in text
