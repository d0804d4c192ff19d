"""Space files are validated in full before anything starts (no Ray needed here)."""

import pytest

from zeroflow.errors import ConfigError
from zeroflow.sweep import load_space, trial_config

GOOD = """
name: demo
base: {dataset: digits, epochs: 1}
grid: {optimizer: [fo-sgd, zo-sgd], method: [ease, aper]}
resources: {cpu: 1, gpu: 0}
run: {max_failures: 2, max_concurrent: 2, num_samples: 3}
"""


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_space_expands_every_trial(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    assert space.name == "demo" and space.n_trials == 12  # 4 grid points × 3 seeds
    assert {(c.optimizer, c.method) for c in space.configs} == {
        ("fo-sgd", "ease"), ("fo-sgd", "aper"), ("zo-sgd", "ease"), ("zo-sgd", "aper")}
    assert space.varying == ["optimizer", "method", "seed"]
    ps = space.param_space()
    assert ps["seed"]["grid_search"] == [0, 1, 2] and ps["epochs"] == 1


@pytest.mark.parametrize("edit,needle", [
    (("grid: {optimizer", "grid: {optimiser"), "unknown grid key(s) optimiser; allowed: dataset"),
    (("zo-sgd]", "zo-sgdd]"), "optimizer='zo-sgdd' is not valid; choose one of: fo-sgd"),
    (("epochs: 1", "epochs: 0"), "epochs=0 is out of range"),
    (("run: {", "runs: {"), "unknown key(s) runs"),
    (("max_failures: 2", "max_failures: -1"), "run.max_failures=-1 must be an integer >= 0"),
    (("cpu: 1", "cpu: 0"), "resources.cpu=0 must be a number > 0"),
    (("gpu: 0}", "gpus: 1}"), "unknown resources key(s) gpus"),
    (("method: [ease, aper]", "method: []"), "grid.method must be a non-empty list"),
    (("optimizer: [fo-sgd, zo-sgd]", "optimizer: [\"__import__('os').system('x')\"]"),
     "is not valid; choose one of"),
])
def test_bad_spaces_fail_in_one_line_before_anything_starts(tmp_path, edit, needle):
    path = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ConfigError) as err:
        load_space(path)
    message = str(err.value)
    assert needle in message and "\n" not in message and str(path) in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # nothing written


@pytest.mark.parametrize("sample,needle", [
    ("{lr: {loguniform: [0.1, 0.01]}}", "low 0.1 must be below high 0.01"),
    ("{lr: {loguniform: [0.0, 0.01]}}", "low 0.0 must be > 0"),
    ("{lr: {gaussian: [0.0, 1.0]}}", "unknown sampler 'gaussian'"),
    ("{lr: {uniform: [0.1, 2.0e+9]}}", None),
    ("{mu: {uniform: [-1.0, 1.0]}}", "mu=-1.0 is out of range"),
    ("{batch_size: {randint: [8, 32]}}", None),
    ("{lr: {loguniform: [1e-4, 1e-1]}}", None),  # YAML reads 1e-4 as a string
    ("{mu: {uniform: [1.0e-3, .inf]}}", "must be a finite number"),
])
def test_sampled_ranges_are_checked_at_both_ends(tmp_path, sample, needle):
    text = GOOD.replace("run: {", f"sample: {sample}\nrun: {{")
    if needle is None:
        space = load_space(write(tmp_path, text))
        assert not space.seeds_from_samples and space.num_samples == 3
        return
    with pytest.raises(ConfigError, match=needle):
        load_space(write(tmp_path, text))


def test_overrides_and_united_grids(tmp_path):
    text = """
name: u
base: {dataset: digits, q: 1}
grid:
  - {optimizer: [zo-sgd, zo-adam]}
  - {optimizer: [zo-sgd], q: [4]}
overrides:
  - when: {optimizer: zo-adam}
    set: {lr: 1.0e-4}
"""
    space = load_space(write(tmp_path, text))
    assert [(c.optimizer, c.q, c.lr) for c in space.configs] == [
        ("zo-sgd", 1, None), ("zo-adam", 1, 1e-4), ("zo-sgd", 4, None)]
    assert space.varying == ["optimizer", "q"]
    points = space.param_space()["grid_point"]["grid_search"]
    assert trial_config({"dataset": "digits", "grid_point": points[2]})["q"] == 4
    bad = text.replace("when: {optimizer", "when: {method")
    with pytest.raises(ConfigError, match="may only name grid keys"):
        load_space(write(tmp_path, bad))


def test_shipped_spaces_are_valid():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "tune_spaces"
    sizes = {p.stem: load_space(p).n_trials for p in sorted(root.glob("*.yaml"))}
    assert sizes == {"enhancements": 17, "query_budget": 12, "quickstart": 36, "table1": 72,
                     "table2_efficiency": 18, "sharpness_digits": 18}


def test_no_string_or_yaml_tag_in_a_space_is_ever_evaluated(tmp_path):
    """Payloads that would create a file if evaluated: as a grid value, a sampler argument, an
    override value and a Python YAML tag. Each is refused, and the file never appears."""
    target = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(target)!r}).touch()"
    payloads = [
        GOOD.replace("[fo-sgd, zo-sgd]", f'["{code}"]'),
        GOOD.replace("run: {", f'sample: {{lr: {{loguniform: [0.001, "{code}"]}}}}\nrun: {{'),
        GOOD.replace("run: {", "overrides: [{when: {optimizer: zo-sgd}, "
                     f'set: {{lr: "{code}"}}}}]\nrun: {{'),
        GOOD.replace("epochs: 1", f"epochs: !!python/object/apply:exec [\"{code}\"]"),
    ]
    for i, text in enumerate(payloads):
        with pytest.raises(ConfigError) as err:
            load_space(write(tmp_path, text, f"s{i}.yaml"))
        assert "\n" not in str(err.value)
        assert not target.exists(), text


def test_cli_sweep_and_resume_errors_are_one_line(tmp_path, capsys):
    from zeroflow.cli import main

    for argv, needle in [
        (["sweep", str(tmp_path / "missing.yaml")], "missing.yaml does not exist"),
        (["sweep", str(write(tmp_path, GOOD.replace("epochs: 1", "epochs: x")))],
         "epochs='x' is not a valid int"),
        (["resume", "nosuch", "--storage", str(tmp_path / "runs")],
         f"no sweep to resume at {tmp_path / 'runs' / 'nosuch'}"),
        (["resume", str(tmp_path)], "no sweep to resume at"),
    ]:
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (argv, err)
        assert needle in err[0], (needle, err[0])
    assert not (tmp_path / "runs").exists()
