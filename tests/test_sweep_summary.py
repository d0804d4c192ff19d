"""The sweep's summary table (``zeroflow.sweep.summary``) from a stand-in for Ray's results: the
untrained rows as the baseline of their method, each row's gain over it, and ties flagged."""

import pandas as pd

from zeroflow.sweep import summary_table


class Results:
    """What ``summary_table`` reads of a Ray ``ResultGrid``: its dataframe."""

    def __init__(self, rows):
        self.rows = rows

    def get_dataframe(self):  # as Ray flattens it: the base, and a united grid's point
        return pd.DataFrame([{"config/epochs": 5, **{f"config/grid_point/{k}": v
                                                     for k, v in config.items()},
                              **metrics, "task": 1, "n_tasks": 2}
                             for config, metrics in self.rows])


def row(method, optimizer, epochs, avg, last, lr=0.1):
    """A trial; epochs 5 is the base's (not in the grid point), epochs 0 the point's."""
    point = {"method": method, "optimizer": optimizer, "lr": lr}
    return ({**point, "epochs": epochs} if epochs != 5 else point,
            {"avg_accuracy": avg, "accuracy": last, "forgetting": 1.0, "forward_passes": 42.0})


def test_untrained_rows_are_the_baseline_of_their_method_and_ties_share_a_letter():
    results = Results([
        row("ease", "fo-sgd", 5, 85.0, 80.0), row("ease", "zo-sgd", 0, 80.0, 75.0, lr=None),
        row("ease", "zo-sgd", 5, 82.004, 79.001), row("ease", "zo-adam", 5, 82.001, 79.004),
        row("aper", "zo-sgd", 0, 70.0, 60.0, lr=None), row("aper", "fo-sgd", 5, 72.5, 61.0),
        row("aper", "zo-adam", 5, 72.5, 62.0)])
    table = summary_table(results, ["method", "optimizer", "epochs", "lr"])
    by = {(r.method, r.optimizer): r for r in table.itertuples()}
    assert by[("ease", "fo-sgd")].gain == 85.0 - 80.0
    assert abs(by[("ease", "zo-sgd")].gain - (82.004 - 80.0)) < 1e-12
    assert by[("aper", "fo-sgd")].gain == 72.5 - 70.0
    assert by[("ease", "untrained")].gain == 0.0 and by[("ease", "untrained")].lr == "-"
    # 82.00 / 79.00 to two decimals: a tie; aper's rows differ in last, so no tie there
    assert by[("ease", "zo-sgd")].tie == by[("ease", "zo-adam")].tie == "A"
    assert {by[k].tie for k in by if k not in (("ease", "zo-sgd"), ("ease", "zo-adam"))} == {""}
    assert list(table["method"]) == ["aper"] * 3 + ["ease"] * 4  # grouped, best first
    assert list(table["avg"])[3:] == [85.0, 82.004, 82.001, 80.0]
    assert table["forward_passes"].tolist() == [42] * 7
    assert sorted(table["epochs"].tolist()) == [0, 0, 5, 5, 5, 5, 5]  # integers, base filled


def test_without_untrained_rows_there_is_no_gain_column():
    table = summary_table(Results([row("ease", "fo-sgd", 5, 85.0, 80.0),
                                   row("ease", "zo-sgd", 5, 84.0, 80.0)]),
                          ["optimizer"])
    assert "gain" not in table and "tie" not in table


def test_over_seeds_each_row_gains_over_the_untrained_row_of_its_own_seed():
    """A sweep over seeds: the baseline and the ties are per seed (one seed's untrained row is
    no baseline for another's, and two seeds of one optimizer agreeing is no tie)."""
    def seeded(seed, optimizer, epochs, avg, last):
        config, metrics = row("zofc", optimizer, epochs, avg, last)
        return {**config, "seed": seed}, metrics

    results = Results([seeded(1, "zo-sgd", 0, 9.5, 6.0), seeded(2, "zo-sgd", 0, 19.0, 7.0),
                       seeded(1, "fo-sgd", 5, 90.0, 82.0), seeded(2, "fo-sgd", 5, 90.0, 82.0),
                       seeded(2, "zo-adam", 5, 85.0, 72.0)])
    table = summary_table(results, ["method", "optimizer", "epochs", "seed"])
    by = {(r.optimizer, r.seed): r for r in table.itertuples()}
    assert by[("fo-sgd", 1)].gain == 90.0 - 9.5 and by[("fo-sgd", 2)].gain == 90.0 - 19.0
    assert by[("zo-adam", 2)].gain == 85.0 - 19.0
    assert by[("untrained", 1)].gain == 0.0 and by[("untrained", 2)].gain == 0.0
    assert "tie" not in table
