"""``zeroflow report`` against runs written into a temporary MLflow store by the project's own
tracker (no Ray): every table cell against the logged values, ± against numpy, the notes for a
FAILED run and a missing grid point, duplicates after a relaunch, the paper's values beside ours,
every output format, the figures, and the HTML page in a real browser."""

import csv
import time
from importlib import resources

import numpy as np
import pandas as pd
import pytest
from conftest import as_args, tiny_trial

from zeroflow.cli import main
from zeroflow.config import make_config
from zeroflow.report import build_report, write_report
from zeroflow.report.grid import MISSING, NO_PAPER
from zeroflow.tracking import TAG_MEMORY, SweepTracker

N_TASKS = 3
RNG = np.random.default_rng(7)


def fake_trial(seen=None, steps=(10, 20, 30), train_time=(2.0, 2.5, 3.0), passes_per_step=2,
               peak_mb=1500.0):
    """Per-task metrics of a 3-task trial: accuracy matrix a[t, j] and 'seen' accuracy."""
    a = np.full((N_TASKS, N_TASKS), np.nan)
    for t in range(N_TASKS):
        a[t, : t + 1] = RNG.uniform(40, 100, t + 1).round(3)
    seen = list(seen) if seen is not None else list(RNG.uniform(50, 95, N_TASKS).round(3))
    tasks = []
    for t in range(N_TASKS):
        tasks.append({"accuracy": seen[t], **{f"accuracy_task_{j}": a[t, j] for j in range(t + 1)},
                      "steps": float(steps[t]), "forward_passes": float(steps[t] *
                                                                         passes_per_step),
                      "train_time_task_s": train_time[t], "time_task_s": train_time[t] + 0.5,
                      "peak_memory_mb": peak_mb - 10 * (N_TASKS - 1 - t)})
    return a, seen, tasks


def expected(a, seen):
    """PILOT's definitions, computed here from the matrix (not by the code under test)."""
    T = N_TASKS - 1
    fgt = np.mean([a[j:, j].max() - a[T, j] for j in range(T)])
    return {"avg": float(np.mean(seen)), "last": float(seen[-1]), "forgetting": float(fgt)}


def log_run(tracker, trial_id, config, tasks, status="FINISHED", label="cpu_peak_rss",
            upto=None):
    run_id = tracker.trial_run(trial_id, trial_id, config)
    for t, metrics in enumerate(tasks[: upto or len(tasks)]):
        tracker.log_task(run_id, t, metrics, {TAG_MEMORY: label})
    tracker.finish_trial(run_id, config, N_TASKS, trial_id, status)
    time.sleep(0.01)  # distinct end times: "the latest FINISHED run" is well defined
    return run_id


def cfg(**kw):
    return make_config({"dataset": "cifar100", "method": "ease", "epochs": 2, **kw}).to_dict()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Experiments 'old' (one early run), 'sweep' (the grid), 'enh' (history α)."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    truth = {}
    old = SweepTracker("old", uri, sweep_id="o1")
    a, seen, tasks = fake_trial()
    log_run(old, "old-zo", cfg(optimizer="zo-sgd", seed=0), tasks)  # superseded below
    truth["old zo-sgd"] = expected(a, seen)

    sw = SweepTracker("sweep", uri, sweep_id="s1")
    done = truth["sweep"] = {}  # (method, optimizer) → [(expected, tasks, memory label)]
    for seed in (0, 1):
        if seed == 1:  # a relaunch: the first try failed after one task
            _, _, tasks = fake_trial()
            log_run(sw, "fo1-try1", cfg(optimizer="fo-sgd", seed=1), tasks, "FAILED", upto=1)
        a, seen, tasks = fake_trial(passes_per_step=1)
        log_run(sw, f"fo{seed}", cfg(optimizer="fo-sgd", seed=seed), tasks)
        truth[f"ease fo-sgd {seed}"] = expected(a, seen)
        done.setdefault(("ease", "fo-sgd"), []).append((expected(a, seen), tasks, "CPU-RSS"))
    a, seen, tasks = fake_trial(peak_mb=2000.0)
    log_run(sw, "zo0", cfg(optimizer="zo-sgd", seed=0), tasks, label="cuda_max_allocated")
    truth["ease zo-sgd"] = expected(a, seen)
    truth["ease zo-sgd tasks"] = tasks
    done[("ease", "zo-sgd")] = [(expected(a, seen), tasks, "GPU")]
    _, _, tasks = fake_trial()
    log_run(sw, "zo0-relaunch", cfg(optimizer="zo-sgd", seed=0), tasks, "FAILED", upto=2)
    _, _, tasks = fake_trial()
    log_run(sw, "sign0", cfg(optimizer="zo-sgd-sign", seed=0), tasks, "FAILED", upto=1)
    for opt in ("fo-sgd", "zo-sgd"):  # APER trains task 0 only; no zo-sgd-sign: a missing point
        a, seen, tasks = fake_trial(steps=(12, 12, 12), train_time=(3.0, 0.1, 0.2))
        log_run(sw, f"aper-{opt}", cfg(method="aper", optimizer=opt, seed=0), tasks)
        truth[f"aper {opt}"] = expected(a, seen)
        truth[f"aper {opt} tasks"] = tasks
        done[("aper", opt)] = [(expected(a, seen), tasks, "CPU-RSS")]
    a, seen, tasks = fake_trial()
    log_run(sw, "ft", cfg(method="finetune", optimizer="fo-sgd", seed=0), tasks)
    truth["finetune fo-sgd"] = expected(a, seen)
    done[("finetune", "fo-sgd")] = [(expected(a, seen), tasks, "CPU-RSS")]

    enh = SweepTracker("enh", uri, sweep_id="e1")
    for alpha in (0.0, 0.2):
        a, seen, tasks = fake_trial()
        log_run(enh, f"h{alpha}", cfg(dataset="imagenet-a", optimizer="zo-sgd", history=alpha,
                                      seed=0), tasks)
        truth[f"history {alpha}"] = expected(a, seen)
    return uri, truth


def paper(table, method, optimizer, dataset, metric, setting=""):
    """The published value, read from the package's CSV here (independently of the lookup)."""
    path = resources.files("zeroflow") / "reference" / "zeroflow_paper_results.csv"
    with path.open() as fh:
        for row in csv.DictReader(fh):
            if (row["table"], row["method"], row["optimizer"], row["dataset"], row["setting"],
                    row["metric"]) == (str(table), method, optimizer, dataset, setting, metric):
                return float(row["value"])
    raise KeyError((table, method, optimizer, dataset, setting, metric))


def cell(table, keys, column, group=None):
    """The text of ``column`` (under header ``group``) in the row starting with ``keys``."""
    rows = [r for r in table.rows if r[: len(keys)] == list(keys)]
    assert len(rows) == 1, (keys, [r[:4] for r in table.rows])
    start, index = 0, None
    for label, span in table.groups:
        if group is None or label == group:
            names = table.columns[start : start + span]
            if column in names:
                index = start + names.index(column)
                break
        start += span
    assert index is not None, (column, group, table.columns)
    return rows[0][index]


def note(table, text):
    """The note that ``text`` (e.g. '–[2]') points at."""
    marker = text[text.index("[") + 1 : text.index("]")]
    return table.notes[int(marker) - 1]


def f2(x):
    return f"{x:.2f}"


def test_table1_cells_equal_the_logged_values_with_numpy_mean_and_std(store):
    uri, truth = store
    t1 = build_report(["sweep", "old"], uri).tables[0]
    assert t1.name == "table1"
    assert t1.columns[:3] == ["method", "optimizer", "strategy"]
    assert [g for g, _ in t1.groups] == ["", "cifar100"]
    for metric, label in (("avg", "Avg"), ("last", "Last"), ("forgetting", "Fgt")):
        two = [truth[f"ease fo-sgd {s}"][metric] for s in (0, 1)]
        assert cell(t1, ["ease", "SGD", "FO"], label) == (
            f"{f2(np.mean(two))} ± {f2(np.std(two, ddof=1))}")
        for name, keys in (("ease zo-sgd", ["ease", "SGD", "ZO"]),
                           ("aper fo-sgd", ["aper", "SGD", "FO"]),
                           ("finetune fo-sgd", ["finetune", "SGD", "FO"])):
            assert cell(t1, keys, label) == f2(truth[name][metric])
        rows = t1.data[(t1.data.method == "ease") & (t1.data.optimizer == "fo-sgd")
                       & (t1.data.metric == metric)]
        assert rows["mean"].item() == pytest.approx(np.mean(two), abs=1e-9)
        assert rows["std"].item() == pytest.approx(np.std(two, ddof=1), abs=1e-9)
        assert rows["n"].item() == 2
    assert cell(t1, ["ease", "SGD", "FO"], "seeds") == "2"
    assert cell(t1, ["ease", "SGD", "ZO"], "seeds") == "1"


def mean_pm(values, digits=2):
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def test_every_cell_of_table1_and_table2(store):
    """Each of Table 1's 9 rows × (Avg, Last, Fgt) × (ours, paper, Δ) + seeds, and each of
    Table 2's rows, from the values logged (and the paper's CSV read here)."""
    uri, truth = store
    report = build_report(["sweep"], uri)
    t1, t2 = report.tables[:2]
    family = {"fo-sgd": ["SGD", "FO"], "zo-sgd": ["SGD", "ZO"], "zo-sgd-sign": ["SGD", "Sign"]}
    checked = 0
    for method in ("ease", "aper", "finetune"):
        for opt in ("fo-sgd", "zo-sgd", "zo-sgd-sign"):
            row = [r for r in t1.rows if r[:3] == [method, *family[opt]]]
            assert len(row) == 1
            row, runs = row[0], truth["sweep"].get((method, opt), [])
            i = 3
            for metric, theirs in (("avg", "avg"), ("last", "last"), ("forgetting", "fgt")):
                try:
                    ref = paper(1, method.upper(), opt, "cifar100", theirs)
                except KeyError:
                    ref = None
                ours = [e[metric] for e, _, _ in runs]
                if ours:
                    assert row[i] == mean_pm(ours)
                else:
                    assert row[i].startswith(MISSING + "[")
                assert row[i + 1] == (NO_PAPER if ref is None else f2(ref))
                assert row[i + 2] == (NO_PAPER if ref is None else MISSING if not ours
                                      else f"{np.mean(ours) - ref:+.2f}")
                i += 3
                checked += 1
            assert row[i].split("[")[0] == str(len(runs))
    assert checked == 27 and len(t1.columns) == 13
    for (method, opt), runs in truth["sweep"].items():
        row = [r for r in t2.rows if r[:4] == ["cifar100", method, opt, "1"]][0]
        cols = dict(zip(t2.columns, row))
        tasks = [t for _, t, _ in runs]
        trained = [[k for k in range(N_TASKS) if t[k]["steps"] > (t[k - 1]["steps"] if k else 0)]
                   for t in tasks]
        seconds = [sum(t[k]["train_time_task_s"] for k in ks) for t, ks in zip(tasks, trained)]
        assert cols["memory"] == runs[0][2]
        assert cols["memory GB"] == mean_pm([t[-1]["peak_memory_mb"] / 1024 for t in tasks])
        assert cols["s/epoch"] == mean_pm([s / (2 * len(ks)) for s, ks in zip(seconds, trained)])
        assert cols["s/step"] == mean_pm([s / t[-1]["steps"] for s, t in zip(seconds, tasks)], 3)
        assert cols["passes/step"] == mean_pm(
            [t[-1]["forward_passes"] / t[-1]["steps"] for t in tasks], 1)
        assert cols["seeds"] == str(len(runs))


def test_failed_run_and_missing_grid_point_show_a_dash_and_a_note(store):
    uri, _ = store
    t1 = build_report(["sweep"], uri).tables[0]
    failed = cell(t1, ["ease", "SGD", "Sign"], "Avg")
    assert failed.startswith(MISSING + "[")
    text = note(t1, failed)
    assert "optimizer=zo-sgd-sign" in text and "'sign0'" in text and "FAILED" in text
    missing = cell(t1, ["aper", "SGD", "Sign"], "Last")
    assert missing.startswith(MISSING + "[")
    assert note(t1, missing) == "method=aper, optimizer=zo-sgd-sign, dataset=cifar100: not run"
    assert cell(t1, ["aper", "SGD", "Sign"], "seeds").startswith("0[")
    # every product cell is there: 3 methods × 3 optimizers, none silently dropped
    assert len(t1.rows) == 9


def test_duplicates_after_a_relaunch_count_once_the_latest_finished(store):
    uri, truth = store
    report = build_report(["sweep", "old"], uri)
    t1 = report.tables[0]
    # 'zo0' (FINISHED) counts; the older 'old-zo' and the later FAILED 'zo0-relaunch' do not
    assert cell(t1, ["ease", "SGD", "ZO"], "Avg") == f2(truth["ease zo-sgd"]["avg"])
    assert truth["ease zo-sgd"]["avg"] != truth["old zo-sgd"]["avg"]
    left_out = {(old.name, new.name) for old, new in report.runset.superseded}
    assert left_out == {("old-zo", "zo0"), ("zo0-relaunch", "zo0"), ("fo1-try1", "fo1")}
    assert any("3 duplicate run(s)" in r and "latest FINISHED" in r for r in t1.remarks)
    # the relaunched seed is not a note: it finished
    assert cell(t1, ["ease", "SGD", "FO"], "seeds") == "2"


def test_published_values_appear_beside_ours_with_the_difference(store):
    uri, truth = store
    t1 = build_report(["sweep"], uri).tables[0]
    for metric, label, theirs in (("avg", "Avg", "avg"), ("forgetting", "Fgt", "fgt")):
        ref = paper(1, "EASE", "zo-sgd", "cifar100", theirs)
        ours = truth["ease zo-sgd"][metric]
        row = ["ease", "SGD", "ZO"]
        index = t1.columns.index(label)
        full = [r for r in t1.rows if r[:3] == row][0]
        assert full[index + 1] == f2(ref)
        assert full[index + 2] == f"{ours - ref:+.2f}"
    # the paper has no finetune: "—" for paper and Δ
    full = [r for r in t1.rows if r[:3] == ["finetune", "SGD", "FO"]][0]
    index = t1.columns.index("Avg")
    assert full[index + 1] == NO_PAPER and full[index + 2] == NO_PAPER


def test_table2_memory_label_time_per_epoch_and_step_from_the_logged_metrics(store):
    uri, truth = store
    t2 = build_report(["sweep"], uri).tables[1]
    keys = ["cifar100", "ease", "zo-sgd", "1"]
    tasks = truth["ease zo-sgd tasks"]
    assert cell(t2, keys, "memory") == "GPU"
    gb = tasks[-1]["peak_memory_mb"] / 1024
    assert cell(t2, keys, "memory GB") == f2(gb)
    ref = paper(2, "EASE", "zo-sgd", "", "memory_gb", "q=1")
    row = [r for r in t2.rows if r[:4] == keys][0]
    i = t2.columns.index("memory GB")
    assert row[i + 1:i + 3] == [f2(ref), f"{gb - ref:+.2f}"]
    epoch = sum(t["train_time_task_s"] for t in tasks) / (2 * N_TASKS)
    assert cell(t2, keys, "s/epoch") == f2(epoch)
    ref = paper(2, "EASE", "zo-sgd", "cifar100", "runtime_s", "q=1")
    i = t2.columns.index("s/epoch")
    assert row[i + 1:i + 3] == [f2(ref), f"{epoch - ref:+.2f}"]
    assert cell(t2, keys, "s/step") == f"{sum(t['train_time_task_s'] for t in tasks) / 30:.3f}"
    assert cell(t2, keys, "passes/step") == "2.0"
    # APER trains task 0 only: its epochs are task 0's
    aper = truth["aper fo-sgd tasks"]
    akeys = ["cifar100", "aper", "fo-sgd", "1"]
    assert cell(t2, akeys, "s/epoch") == f2(aper[0]["train_time_task_s"] / 2)
    assert cell(t2, akeys, "s/step") == f"{aper[0]['train_time_task_s'] / 12:.3f}"
    # CPU RSS is not GPU memory: the paper's value is shown, no difference is taken
    fkeys = ["cifar100", "ease", "fo-sgd", "1"]
    assert cell(t2, fkeys, "memory") == "CPU-RSS"
    row = [r for r in t2.rows if r[:4] == fkeys][0]
    i = t2.columns.index("memory GB")
    assert row[i + 1] == f2(paper(2, "EASE", "fo-sgd", "", "memory_gb", "q=1"))
    assert row[i + 2].startswith("n/a[") and "CPU-RSS" in note(t2, row[i + 2])


def test_history_table_and_split_rows_when_a_key_varies_in_a_cell(store):
    uri, truth = store
    report = build_report(["enh"], uri)
    t3 = [t for t in report.tables if t.name == "table3"][0]
    for alpha in (0.0, 0.2):
        keys = ["imagenet-a", "ease", "zo-sgd", f"{alpha:g}"]
        assert cell(t3, keys, "Avg") == f2(truth[f"history {alpha}"]["avg"])
        ref = paper(3, "EASE", "zo-sgd", "imagenet-a", "avg", f"history={alpha}")
        row = [r for r in t3.rows if r[:4] == keys][0]
        i = t3.columns.index("Avg")
        assert row[i + 1] == f2(ref)
    t1 = report.tables[0]  # history varies within (ease, zo-sgd, imagenet-a): rows split
    assert "history" in t1.columns and len(t1.rows) == 2
    assert not [t for t in report.tables if t.name == "table4"]


def test_pivot_of_swept_keys_and_its_errors(store):
    uri, truth = store
    report = build_report(["sweep"], uri, rows=["optimizer"], cols=["method"])
    pv = report.tables[-1]
    assert pv.name == "pivot" and [g for g, _ in pv.groups] == ["", "ease", "aper", "finetune"]
    assert cell(pv, ["zo-sgd"], "Last", group="aper") == f2(truth["aper zo-sgd"]["last"])
    assert cell(pv, ["zo-sgd-sign"], "Avg", group="aper").startswith(MISSING + "[")
    assert "paper" in pv.columns  # some cells match the paper
    with pytest.raises(Exception, match="'nope' is not a logged config key"):
        build_report(["sweep"], uri, rows=["nope"])


def test_every_format_is_written_and_csv_holds_the_numbers(store, tmp_path):
    uri, truth = store
    report = build_report(["sweep"], uri)
    written = write_report(report, tmp_path, ["md", "csv", "latex", "html"])
    names = {p.name for p in written}
    assert {"table1.md", "table1.csv", "table1.tex", "table2.md", "report.html",
            "accuracy_per_task.png", "accuracy_vs_memory.png", "accuracy_vs_time.png"} <= names
    assert "fig5_accuracy_vs_q.png" not in names  # every run has q = 1: nothing to draw
    data = pd.read_csv(tmp_path / "table1.csv")
    row = data[(data.method == "aper") & (data.optimizer == "fo-sgd") & (data.metric == "last")]
    assert row["mean"].item() == pytest.approx(truth["aper fo-sgd"]["last"], abs=1e-9)
    t2 = pd.read_csv(tmp_path / "table2.csv")
    gpu = t2[(t2.optimizer == "zo-sgd") & (t2.method == "ease") & (t2.metric == "memory_gb")]
    assert gpu["memory"].item() == "GPU"
    failed = data[(data.optimizer == "zo-sgd-sign") & (data.method == "ease")]
    assert failed["n"].eq(0).all() and failed["note"].str.contains("FAILED").all()
    md = (tmp_path / "table1.md").read_text()
    assert md.count("\n| ease |") == 3 and "| method | optimizer | strategy |" in md
    tex = (tmp_path / "table1.tex").read_text()
    assert "\\multicolumn{10}{c}{cifar100}" in tex and "$\\pm$" in tex and "±" not in tex
    for png in (p for p in written if p.suffix == ".png"):
        head = png.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(head[16:20], "big") >= 800, png.name  # IHDR width in pixels
    page = (tmp_path / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert "Figure 5 (Avg accuracy against the query budget q) left out: every run has q = 1" in (
        page)
    # no column is empty in every row (the paper's columns where it has no cell are left out)
    for table in report.tables:
        fixed = sum(span for label, span in table.groups[:1])
        for j in range(fixed, len(table.columns)):
            assert any(row[j] not in ("—",) and row[j].split("[")[0] != "–"
                       for row in table.rows), (table.name, table.columns[j])
    assert "http://" not in page and "https://" not in page  # self-contained


def test_memory_label_is_recorded_by_zeroflow_run(tmp_path):
    import mlflow

    tiny = as_args(tiny_trial(init_cls=5, increment=5, epochs=1, limit_batches=1,
                              samples_per_class=12, optimizer="zo-sgd"))
    assert main(["run", *tiny]) == 0
    client = mlflow.tracking.MlflowClient()
    exp = client.get_experiment_by_name("zeroflow-run")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags[TAG_MEMORY] == "cpu_peak_rss"  # CPU-only machine in CI
    rise, peak = run.data.metrics["train_memory_mb"], run.data.metrics["peak_memory_mb"]
    assert 0 < rise < peak
    t2 = build_report().tables[1]
    # Table 2 shows the training's own figure (the RSS rise), labelled so
    assert cell(t2, ["digits", "ease", "zo-sgd", "1"], "memory") == "CPU-RSS rise"
    assert cell(t2, ["digits", "ease", "zo-sgd", "1"], "memory GB") == f"{rise / 1024:.2f}"


def test_cli_report_prints_table1_and_errors_in_one_line(store, tmp_path, monkeypatch, capsys):
    uri, truth = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "rep"
    assert main(["report", "--experiment", "sweep", "--out", str(out), "--format", "csv"]) == 0
    printed = capsys.readouterr().out
    assert "Table 1" in printed and "cifar100" in printed
    assert f2(truth["aper fo-sgd"]["avg"]) in printed
    assert (out / "table1.csv").exists() and (out / "accuracy_per_task.png").exists()
    assert not (out / "table1.md").exists()  # only the formats asked for
    assert main(["report", "--experiment", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("zeroflow: reading runs from ")  # said first, before the imports
    assert len(err) == 2 and err[1].startswith("error: no experiment named 'nope'")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    assert main(["report"]) == 2
    assert "no MLflow store" in capsys.readouterr().err


@pytest.mark.browser
def test_html_report_in_a_real_browser_shows_tables_and_images(store, tmp_path,
                                                              headless_browser):
    uri, truth = store
    written = write_report(build_report(["sweep"], uri), tmp_path, ["html"])
    page = [p for p in written if p.name == "report.html"][0]
    browser = headless_browser
    browser.get(page.resolve().as_uri())
    table = browser.find_element("id", "table1-table")
    assert "ease" in table.text and f2(truth["ease zo-sgd"]["avg"]) in table.text
    assert browser.find_element("id", "table2-table").is_displayed()
    images = browser.find_elements("tag name", "img")
    assert len(images) == 3  # Figure 5 is left out (every run has q = 1), a note says so
    assert "Figure 5 (Avg accuracy against the query budget q) left out" in browser.find_element(
        "id", "figures").text
    for img in images:  # decoded: the inlined PNGs are real images
        width = browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img)
        assert width and width >= 800


def test_no_runs_is_a_one_line_error(tmp_path):
    from mlflow.tracking import MlflowClient

    from zeroflow.errors import ReportError

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("empty")
    with pytest.raises(ReportError, match="no zeroflow trial runs"):
        build_report(["empty"], uri)


def test_sweep_callback_records_the_memory_label_a_trial_reports(tmp_path):
    """The Ray driver's MLflow callback tags the run with the reported label (no Ray session)."""
    from types import SimpleNamespace

    import mlflow

    pytest.importorskip("ray")
    from zeroflow.sweep import MLflowSweepCallback

    uri = f"sqlite:///{tmp_path / 'cb.db'}"
    callback = MLflowSweepCallback("cb", uri, ["optimizer"], space={}, sweep_id="s")
    trial = SimpleNamespace(trial_id="t1", config={"dataset": "digits", "optimizer": "zo-sgd"},
                            last_result={})
    callback.on_trial_result(0, [], trial, {"task": 0, "n_tasks": 2, "accuracy": 50.0,
                                            "memory_label": "cuda_max_allocated"})
    client = mlflow.tracking.MlflowClient(uri)
    (run,) = [r for r in client.search_runs([client.get_experiment_by_name("cb").experiment_id])
              if r.data.tags.get("zeroflow.role") == "trial"]
    assert run.data.tags[TAG_MEMORY] == "cuda_max_allocated"
    assert run.data.metrics["accuracy"] == 50.0


def test_runs_a_resumed_sweep_no_longer_knows_end_killed_and_leave_the_report(tmp_path,
                                                                              monkeypatch):
    """A resumed sweep's callback, at its first step, ends the RUNNING runs of trials that Tune's
    restored state does not hold (KILLED, tagged with why); the report leaves them out; a run
    whose trial does come back is reopened without the tag."""
    import pickle
    from types import SimpleNamespace

    import mlflow

    pytest.importorskip("ray")
    from zeroflow.sweep import MLflowSweepCallback
    from zeroflow.tracking import TAG_ABANDONED

    uri = f"sqlite:///{tmp_path / 'cb.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # a resume would adopt it
    callback = MLflowSweepCallback("lost", uri, ["optimizer"], space={}, sweep_id="s")
    callback.on_step_begin(0, [])  # a fresh launch: nothing to end

    def trial(trial_id, optimizer):
        return SimpleNamespace(trial_id=trial_id, last_result={}, config={
            "dataset": "digits", "optimizer": optimizer, "epochs": 1})

    known, lost, back = trial("t1", "fo-sgd"), trial("t2", "zo-sgd"), trial("t3", "zo-adam")
    for t in (known, lost, back):
        callback.on_trial_start(0, [], t)
        callback.on_trial_result(0, [], t, {"task": 0, "n_tasks": 1, "accuracy": 50.0})
    callback.on_trial_complete(0, [], known)  # FINISHED before the driver died
    resumed = pickle.loads(pickle.dumps(callback))  # as `zeroflow resume` restores it
    resumed.on_step_begin(0, [known])
    resumed.on_step_begin(1, [known, trial("t4", "zo-sgd")])  # checked once, at the first step

    client = mlflow.tracking.MlflowClient(uri)
    runs = {r.data.tags["zeroflow.trial_id"]: r for r in client.search_runs(
        [client.get_experiment_by_name("lost").experiment_id], "tags.`zeroflow.role` = 'trial'")}
    assert runs["t1"].info.status == "FINISHED" and TAG_ABANDONED not in runs["t1"].data.tags
    for tid in ("t2", "t3"):
        assert runs[tid].info.status == "KILLED"
        assert "not in Tune's saved state" in runs[tid].data.tags[TAG_ABANDONED]
    resumed.on_trial_start(2, [], back)  # t3's trial restarted after all: its run reopens
    run = client.get_run(runs["t3"].info.run_id)
    assert run.info.status == "RUNNING" and TAG_ABANDONED not in run.data.tags
    resumed.on_trial_complete(3, [], back)
    assert {r.name for r in build_report(["lost"], uri).runset.runs} == {
        runs["t1"].info.run_name, runs["t3"].info.run_name}


def test_figure_5_is_drawn_when_q_varies_and_an_all_dash_paper_column_is_dropped(tmp_path):
    uri = f"sqlite:///{tmp_path / 'q.db'}"
    tracker = SweepTracker("budget", uri, sweep_id="q")
    for q in (1, 4):
        _, _, tasks = fake_trial()
        log_run(tracker, f"q{q}", cfg(dataset="digits", optimizer="zo-sgd", q=q), tasks)
    report = build_report(["budget"], uri)
    written = {p.name for p in write_report(report, tmp_path / "out", ["md"])}
    assert "fig5_accuracy_vs_q.png" in written
    table1 = report.tables[0]  # the paper has no digits cell: no paper or Δ column at all
    assert "paper" not in table1.columns and "Δ" not in table1.columns
    assert any("Left out, empty in every row" in r for r in table1.remarks)
