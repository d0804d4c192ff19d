"""How often the driver has Tune save its experiment state: every 2 s for the sweeps the resume
tests kill (tests/test_sweep_resume.py, tests/test_sweep_search.py), less often as a sweep
grows, since a save writes every trial's state (benchmarks/sweep_scale.py measures it)."""

from zeroflow.sweep import driver


def test_period_is_two_seconds_up_to_100_trials_then_grows_with_the_sweep():
    assert [driver.state_period(n) for n in (1, 36, 100, 200, 1000)] == [2, 2, 2, 4, 20]


def test_each_sweep_of_a_process_gets_its_own_period_and_a_users_value_wins(monkeypatch):
    monkeypatch.delenv("TUNE_GLOBAL_CHECKPOINT_S", raising=False)
    monkeypatch.setattr(driver, "_PERIOD_SET", {})
    driver._frequent_experiment_state(50)
    assert driver.os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "2"
    driver._frequent_experiment_state(1000)  # a later, larger sweep in the same process
    assert driver.os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "20"
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "3600")  # the user's (the resume tests')
    driver._frequent_experiment_state(10)
    assert driver.os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "3600"
