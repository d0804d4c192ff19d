"""Metrics against hand computation on a made-up accuracy matrix."""

import math

import numpy as np
import pytest
import torch

from zeroflow.metrics import AccuracyMatrix, accuracy_by_task


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
