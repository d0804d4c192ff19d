"""Metrics against hand computation on a made-up accuracy matrix; peak memory."""

import math
import os
import resource

import numpy as np
import pytest
import torch

from zeroflow.metrics import AccuracyMatrix, PeakMemory, accuracy_by_task


def hand_matrix():
    m = AccuracyMatrix(3)
    m.record(0, [90.0], 90.0)
    m.record(1, [70.0, 80.0], 75.0)
    m.record(2, [60.0, 85.0, 50.0], 65.0)
    return m


def test_avg_last_forgetting_by_hand():
    m = hand_matrix()
    assert m.done == 3
    assert m.avg() == pytest.approx((90 + 75 + 65) / 3)
    assert m.last() == 65.0
    # task 0: max(90, 70, 60) - 60 = 30; task 1: max(80, 85) - 85 = 0 → mean 15
    assert m.forgetting() == pytest.approx(15.0)
    # after task 1: task 0 dropped 90 → 70
    assert m.forgetting(1) == pytest.approx(20.0)
    assert m.forgetting(0) == 0.0
    assert m.avg(1) == pytest.approx(82.5)


def test_csv_and_state_round_trip():
    m = hand_matrix()
    csv = m.to_csv().splitlines()
    assert csv[0] == "after_task,task_0,task_1,task_2,seen"
    assert csv[1] == "0,90.0000,,,90.0000"
    m2 = AccuracyMatrix(3)
    m2.load_state_dict(m.state_dict())
    assert np.array_equal(m2.a, m.a, equal_nan=True) and m2.forgetting() == m.forgetting()


def test_record_checks_length():
    with pytest.raises(ValueError):
        AccuracyMatrix(2).record(1, [1.0], 1.0)


def test_accuracy_by_task_is_sample_weighted():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 2, 0, 0])
    task_of_label = torch.tensor([0, 0, 1])  # classes 0, 1 → task 0; class 2 → task 1
    per_task, overall = accuracy_by_task(preds, labels, task_of_label, 2)
    assert per_task == pytest.approx([200 / 3, 100 / 3])
    assert overall == pytest.approx(50.0)
    per_task, _ = accuracy_by_task(preds, labels, task_of_label, 3)
    assert math.isnan(per_task[2])


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux /proc only")
def test_cpu_peak_memory_counts_from_its_creation_so_a_reused_worker_reports_each_trial():
    big = bytearray(400 * 2**20)  # an earlier trial's peak in the same process
    big[:: 4096] = b"\x01" * len(big[:: 4096])  # touch every page so it is resident
    del big
    lifetime_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    peak = PeakMemory(torch.device("cpu"))
    start = peak.peak_mb()
    assert start < lifetime_mb - 300, (start, lifetime_mb)
    grown = torch.ones(100 * 2**20 // 4)  # 100 MB after the reset do count
    assert peak.peak_mb() > start + 90, (start, peak.peak_mb(), grown.numel())


def _train_memory(optimizer: str) -> dict:
    """A full-backbone finetune trial's memory figures, in a process of its own (so that no
    earlier trial's allocations sit in its baseline)."""
    import json
    import subprocess
    import sys

    code = ("import json; from zeroflow.trial import run_trial; r = run_trial(dict("
            "dataset='digits', method='finetune', finetune_scope='full', optimizer="
            f"{optimizer!r}, epochs=1, init_cls=5, increment=5, batch_size=64, "
            "samples_per_class=40, limit_batches=3)); print(json.dumps(r.summary))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux /proc only")
def test_training_memory_on_cpu_is_the_rise_over_the_built_learner_and_shows_zo_saving():
    """On CPU the absolute peak RSS is mostly the torch runtime (the same for every optimizer);
    the training's own figure leaves it out, so that FO-SGD's backward (gradients of every
    backbone weight, activations kept for it) shows against ZO-SGD's forwards."""
    fo, zo = _train_memory("fo-sgd"), _train_memory("zo-sgd")
    for summary in (fo, zo):
        assert 0 < summary["train_memory_mb"] < summary["peak_memory_mb"] - 200, summary
    assert fo["train_memory_mb"] > zo["train_memory_mb"], (fo, zo)
