"""Space files are validated in full before anything starts (no Ray needed here)."""

from pathlib import Path

import pytest

from zeroflow.errors import ConfigError
from zeroflow.sweep import load_space, trial_config

ROOT = Path(__file__).resolve().parents[1]

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
    (("epochs: 1", "epochs: -1"), "epochs=-1 is out of range"),
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
    assert sizes == {"enhancements": 30, "query_budget": 12, "quickstart": 40, "table1": 72,
                     "table2_efficiency": 18, "sharpness_digits": 18, "tune_lr": 60,
                     "adaptation_gain": 30, "table1_infty": 36, "query_budget_infty": 12,
                     "enhancements_infty": 31}


def test_adaptation_gain_runs_the_quickstarts_ease_rows_and_an_untrained_row():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "tune_spaces"
    quick = {c.optimizer: c.to_dict() for c in load_space(root / "quickstart.yaml").configs
             if c.method == "ease" and c.epochs > 0}
    space = load_space(root / "adaptation_gain.yaml")
    gain = [c.to_dict() for c in space.configs]
    assert len(quick) == 9 and len(gain) == 10
    assert space.run["num_samples"] == 3 and space.seeds_from_samples  # seeds 0, 1, 2
    for config in gain:
        if config["epochs"] == 0:
            continue
        assert {**config, "seed": 0} == quick[config["optimizer"]], config["optimizer"]
    assert [c["epochs"] for c in gain].count(0) == 1


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


# The official recipes, typed from the experiment files themselves (not from our spaces):
# EASE: github.com/sun-hailong/CVPR24-Ease exps/ease_{cifar,cub,ina,omni}_in21k.json
#   (init_lr, batch_size, weight_decay, init_epochs = later_epochs, alpha);
# APER-adapter: github.com/zhoudw-zdw/RevisitingCIL exps/aper_adapter/
#   {cifar224_5_5,cub_10_10,imageneta_10_10,omni_30_30}_vit-b_adapter.json
#   (init_lr, batch_size, weight_decay, tuned_epoch). alpha is EASE's only.
# Omni's file runs EASE's Omni variant (moni_adam), where alpha is unused (it is forced to 1 and
# the plain classifier ignores it); standard EASE there keeps the other files' 0.1.
SOURCES = {  # (method, dataset): (lr, batch_size, weight_decay, epochs, alpha)
    ("ease", "cifar100"): (0.025, 48, 0.0005, 20, 0.1),
    ("ease", "cub"): (0.008, 32, 0.0005, 20, 0.05),
    ("ease", "imagenet-a"): (0.05, 32, 0.005, 20, 0.1),
    ("ease", "omnibenchmark"): (0.01, 16, 0.0005, 20, 0.1),
    ("aper", "cifar100"): (0.01, 48, 0.0005, 20, None),
    ("aper", "cub"): (0.01, 48, 0.0005, 20, None),
    ("aper", "imagenet-a"): (0.01, 48, 0.0005, 20, None),
    ("aper", "omnibenchmark"): (0.01, 48, 0.0005, 20, None),
}


def test_shipped_spaces_resolve_every_method_and_dataset_to_its_cited_recipe():
    """Every trial of every shipped space on a paper dataset: batch size, weight decay, epochs
    and EASE's alpha as the official file; lr too where the file's optimizer (SGD) runs. The
    forward-pass rows of the ``_infty`` spaces run the authors' code's recipe instead
    (tests/test_infty_recipe.py); their batch size is still the file's."""
    import pathlib

    from zeroflow import optim

    root = pathlib.Path(__file__).resolve().parents[1] / "tune_spaces"
    seen = set()
    for path in sorted(root.glob("*.yaml")):
        for c in load_space(path).configs:
            if c.dataset == "digits":
                continue  # the embedded default has no published recipe
            lr, batch, wd, epochs, alpha = SOURCES[(c.method, c.dataset)]
            where = f"{path.name}: {c.method} {c.dataset} {c.optimizer}"
            assert c.batch_size == batch, where
            seen.add((path.stem, c.method, c.dataset))
            if path.stem.endswith("_infty") and not optim.is_first_order(c.optimizer):
                continue
            assert (c.weight_decay, c.epochs) == (wd, epochs), where
            if alpha is not None:
                assert c.ease_alpha == alpha and c.ease_variant == "standard", where
            if c.optimizer == "fo-sgd":
                assert c.resolved_lr == lr, where
    assert {(m, d) for s, m, d in seen if s == "table1"} == set(SOURCES)
    assert {s for s, _, _ in seen} == {"table1", "table2_efficiency", "query_budget",
                                       "enhancements", "tune_lr", "table1_infty",
                                       "query_budget_infty", "enhancements_infty"}


def test_override_rules_match_base_keys_and_refuse_rules_that_match_nothing(tmp_path):
    text = """
name: m
base: {dataset: digits, method: aper}
grid: {optimizer: [fo-sgd, zo-sgd]}
overrides:
  - when: {method: aper, optimizer: zo-sgd}
    set: {lr: 0.5}
  - when: {method: ease}
    set: {lr: 0.7}
"""
    with pytest.raises(ConfigError) as err:
        load_space(write(tmp_path, text))
    assert "overrides[1].when {method: ease} matches no grid point; check its values" in str(
        err.value) and "\n" not in str(err.value)
    space = load_space(write(tmp_path, text.replace("{method: ease}", "{method: aper}")))
    assert [(c.optimizer, c.lr) for c in space.configs] == [("fo-sgd", 0.7), ("zo-sgd", 0.7)]
    first_only = text.replace("  - when: {method: ease}\n    set: {lr: 0.7}\n", "")
    space = load_space(write(tmp_path, first_only))
    assert [(c.optimizer, c.lr) for c in space.configs] == [("fo-sgd", None), ("zo-sgd", 0.5)]
    bad = text.replace("{method: aper, optimizer", "{seed: 0, optimizer")
    with pytest.raises(ConfigError, match=r"may only name grid keys \(optimizer\) or base keys "
                                          r"\(dataset, method\), not seed"):
        load_space(write(tmp_path, bad))


def test_ray_resolves_the_recipe_spaces_to_the_validated_configs():
    """What Ray Tune runs (grid points with override rules resolved by ``tune.sample_from``,
    some matching on base keys) is exactly the set of configs validated at load time."""
    import pathlib

    from ray.tune.search.variant_generator import generate_variants

    from zeroflow.config import make_config

    root = pathlib.Path(__file__).resolve().parents[1] / "tune_spaces"
    for name in ("table1", "table2_efficiency", "query_budget", "table1_infty",
                 "enhancements_infty"):
        space = load_space(root / f"{name}.yaml")
        resolved = [make_config(trial_config(c)).to_dict()
                    for _, c in generate_variants(space.param_space())]
        validated = [c.to_dict() for c in space.configs]
        key = lambda d: sorted((k, repr(v)) for k, v in d.items())  # noqa: E731
        assert sorted(map(key, resolved)) == sorted(map(key, validated)), name


def test_shipped_spaces_run_by_name_list_and_dry_run(tmp_path, capsys, monkeypatch):
    from zeroflow.cli import main

    monkeypatch.chdir(tmp_path)  # not the repository: the names come from the package
    assert main(["sweep", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in listed]
    assert names == sorted(p.stem for p in (ROOT / "zeroflow" / "spaces").glob("*.yaml"))
    assert any(line.startswith("quickstart") and "offline on CPU" in line for line in listed)
    assert main(["sweep", "quickstart", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sweep quickstart: 40 trials, 2 at a time; every trial: init_cls=5")
    assert len(out) == 3 + 40 and out[1].split() == ["method", "optimizer", "lr", "epochs",
                                                     "fc_lr"]
    assert main(["sweep", "quickstart", "--dry-run", "--format", "json"]) == 0
    import json

    trials = json.loads(capsys.readouterr().out)
    assert len(trials) == 40 and {t["method"] for t in trials} == {"ease", "aper", "finetune",
                                                                   "zofc"}
    assert {t["lr"] for t in trials if t["method"] == "ease" and t["optimizer"] == "fo-adam"} == {
        0.01}  # its override rule, applied
    for argv, needle in [(["sweep", "nosuch"], "no shipped space has that name; shipped: "),
                         (["sweep"], "give a space"),
                         (["sweep", "tune_lr", "--dry-run"], "a searcher (optuna) picks")]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err


def test_run_names_state_what_differs_method_first():
    from zeroflow.sweep.space import run_name

    config = {"dataset": "digits", "method": "ease", "optimizer": "zo-sgd", "q": 4, "lr": 0.003,
              "seed": 1}
    assert run_name(config, ["optimizer", "method", "q"]) == "ease · zo-sgd · q4"
    assert run_name(config, ["lr", "seed", "optimizer"]) == "zo-sgd · lr 0.003 · seed 1"
    assert run_name(config, []) == "trial"


def test_the_space_kept_beside_a_sweep_names_its_plugin_files_by_absolute_path(tmp_path):
    """``zeroflow resume`` reads the space from the sweep's folder: a plugin path relative to
    the original space file must still resolve there."""
    import yaml

    from zeroflow.sweep.driver import _portable_text

    (tmp_path / "my_zo.py").write_text("")
    text = "# mine\nname: s\nplugins: [my_zo.py, some.module]\nbase: {epochs: 1}\n"
    kept = yaml.safe_load(_portable_text(text, tmp_path))
    assert kept["plugins"] == [str(tmp_path / "my_zo.py"), "some.module"]
    assert kept["base"] == {"epochs": 1} and kept["name"] == "s"
    plain = "# mine\nname: s\nplugins: [some.module]\n"
    assert _portable_text(plain, tmp_path) == plain  # nothing to fix: the text as written
