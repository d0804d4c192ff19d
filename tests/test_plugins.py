"""Plugins: the public registration functions, a plugin module from a temporary folder in
``zeroflow run``, a 2-trial sweep (``plugins:``) with its report, query workers, the one-line
errors, the contract checks of ``zeroflow.testing``, and the installable example package."""

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from conftest import as_args, tiny_trial

from zeroflow import data, methods, optim
from zeroflow.cli import main
from zeroflow.errors import ConfigError
from zeroflow.testing import check_method, check_optimizer, check_query_pool

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugins"

PLUGIN = '''
"""A plugin written in a test: a plain ZO-SGD (no momentum) and a linear probe per task."""
import torch
import torch.nn.functional as F
from torch import nn

from zeroflow.methods import CosineHead, Learner, ParamGroup, register_method
from zeroflow.optim import ZeroOrderOptimizer, register_optimizer

register_optimizer("{opt}", ZeroOrderOptimizer, accepts=("lr", "mu", "q", "seed", "weight_decay"),
                   fixed={{"rule": "sgd", "momentum": 0.0}}, family="SGD", strategy="Plain")


class Probe(Learner):
    """A cosine head per task over the frozen pre-trained features."""

    def __init__(self, model, scenario, config):
        super().__init__(model, scenario, config)
        self.heads = nn.ModuleList()

    def before_task(self, task):
        super().before_task(task)
        n = len(self.scenario.task_classes(task))
        self.heads.append(CosineHead(self.model.embed_dim, n, self.generator(task)).to(
            self.device))

    def param_groups(self):
        return [ParamGroup("head", list(self.heads[self.task].parameters()))]

    def loss(self, x, y):
        logits = self.heads[self.task](self.model.features(x, None))
        return F.cross_entropy(logits, self.local_labels(y))

    @torch.no_grad()
    def predict(self, x):
        f = self.model.features(x, None)
        return torch.cat([h(f) for h in self.heads], dim=1)


register_method("{method}", Probe)
'''


@pytest.fixture(autouse=True)
def _registries_as_before():
    """What a test registers, and the plugin modules it imports, are gone after it: the
    registries are per process, and other modules' tests expect the built-ins alone."""
    from zeroflow import plugins
    from zeroflow.models import BACKBONES
    from zeroflow.report.ordering import order

    registries = [optim.REGISTRY, methods.METHODS, data.DATASETS, BACKBONES]
    saved = [dict(r._entries) for r in registries]
    loaded, specs = dict(plugins._LOADED), dict(plugins._SPECS)
    yield
    for registry, entries in zip(registries, saved):
        registry._entries = entries
    new = {m.split(".")[0] for m in set(plugins._LOADED) - set(loaded)}
    for name in [n for n in sys.modules if n.split(".")[0] in new]:
        del sys.modules[name]
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)
    plugins._SPECS.clear()
    plugins._SPECS.update(specs)
    order.cache_clear()


@pytest.fixture
def plugin(tmp_path):
    """A plugin module in a temporary folder; unique names (the registries live per process)."""
    tag = uuid.uuid4().hex[:8]
    names = {"module": f"zf_plugin_{tag}", "opt": f"zo-plain-{tag}", "method": f"probe-{tag}"}
    path = tmp_path / "plugin_src" / f"{names['module']}.py"
    path.parent.mkdir()
    path.write_text(PLUGIN.format(**names))
    return {**names, "path": str(path)}


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


# ------------------------------------------------------------------- registration API
def test_registration_functions_refuse_taken_names_and_bad_entries():
    tag = uuid.uuid4().hex[:8]
    spec = optim.register_optimizer(f"zo-x-{tag}", optim.ZeroOrderOptimizer, accepts="lr",
                                    family="Adam", strategy="Mine")
    assert optim.accepted_hparams(f"zo-x-{tag}") == ("lr",) and spec.family == "Adam"
    assert optim.fo_counterpart(f"zo-x-{tag}") == "fo-adam"
    assert f"zo-x-{tag}" in optim.report_order() and f"zo-x-{tag}" not in optim.NAMES
    with pytest.raises(ConfigError, match="optimizer 'zo-sgd' is already registered"):
        optim.register_optimizer("zo-sgd", optim.ZeroOrderOptimizer, accepts=("lr",))
    with pytest.raises(ConfigError, match="uses_backward"):
        optim.register_optimizer(f"bad-{tag}", lambda params: None, accepts=("lr",))
    with pytest.raises(ConfigError, match="family"):
        optim.register_optimizer(f"bad-{tag}", optim.ZeroOrderOptimizer, accepts=("lr",),
                                 family="RMSprop")
    with pytest.raises(ConfigError, match="method 'ease' is already registered"):
        methods.register_method("ease", methods.get_method("aper"))
    with pytest.raises(ConfigError, match="not a subclass"):
        methods.register_method(f"m-{tag}", object)
    assert methods.get_method("aper").__name__ == "Aper"
    from zeroflow.models import register_backbone

    with pytest.raises(ConfigError, match="backbone 'tiny' is already registered"):
        register_backbone("tiny")(lambda weights: None)
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        methods.get_method("nope")
    load = data.DATASETS["digits"].loader
    with pytest.raises(ConfigError, match="dataset 'digits' is already registered"):
        data.register_dataset("digits", load, num_classes=10, split=(2, 2))
    with pytest.raises(ConfigError, match="whole tasks"):
        data.register_dataset(f"d-{tag}", load, num_classes=10, split=(3, 2))
    with pytest.raises(ConfigError, match="permutation"):
        data.register_dataset(f"d-{tag}", load, num_classes=10, split=(2, 2),
                              class_order=[0] * 10)


def test_a_registered_dataset_keeps_its_fixed_class_order():
    from zeroflow.trial import run_trial

    tag = uuid.uuid4().hex[:8]
    order = list(range(9, -1, -1))
    data.register_dataset(f"rev-{tag}", data.DATASETS["digits"].loader, num_classes=10,
                          split=(5, 5), class_order=order)
    from zeroflow.assembly import build_learner
    from zeroflow.config import make_config

    cfg = make_config(tiny_trial(dataset=f"rev-{tag}", method="aper", epochs=0))
    assert (cfg.init_cls, cfg.increment) == (5, 5)
    _, scenario = build_learner(cfg, torch.device("cpu"))
    assert scenario.order == order
    assert run_trial(cfg).matrix.done == 2


# ------------------------------------------------------------------- contract checks
def test_contract_checks_pass_for_built_ins_and_catch_broken_optimizers():
    check_optimizer("zo-sgd-conserve")
    check_optimizer("fo-adam")

    class Uncounted(optim.ZeroOrderOptimizer):
        def step(self, closure):
            loss = super().step(closure)
            self._counters()["forward_passes"] -= 1
            return loss

    class GlobalNoise(optim.ZeroOrderOptimizer):
        def apply(self, estimate, closure=None, decision=None):
            out = super().apply(estimate, closure, decision)
            for p in self._params():
                p.add_(1e-3 * torch.randn(p.shape))  # torch's global RNG: not reproducible
            return out

    tag = uuid.uuid4().hex[:8]
    for cls, message in ((Uncounted, "forward_passes="), (GlobalNoise, "differ")):
        name = f"broken-{cls.__name__}-{tag}"
        optim.register_optimizer(name, cls, accepts=("lr", "q", "seed"), fixed={"rule": "sgd"})
        with pytest.raises(AssertionError, match=message):
            check_optimizer(name)


def test_plugin_optimizer_and_method_pass_the_contract_checks(plugin, tmp_path):
    from zeroflow import plugins

    (loaded,) = plugins.load([plugin["path"]])
    assert loaded.module == plugin["module"] and loaded.source == plugin["path"]
    env = plugins.runtime_env()  # what a driver starting Ray hands its workers
    assert plugin["path"] in env["py_modules"]
    assert plugin["module"] in env["env_vars"]["ZEROFLOW_PLUGINS"].split(",")
    check_optimizer(plugin["opt"])
    check_method(plugin["method"], tmp_path, optimizer=plugin["opt"])


# ------------------------------------------------------------------- zeroflow run
def test_plugin_runs_in_zeroflow_run_and_is_recorded(plugin, capsys, tmp_path):
    args = as_args(tiny_trial(method=plugin["method"], optimizer=plugin["opt"], epochs=1,
                              limit_batches=2, plugins=plugin["path"]))
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    assert f"{plugin['method']} / {plugin['opt']} on digits" in out
    client = mlflow.tracking.MlflowClient()
    exp = client.get_experiment_by_name("zeroflow-run")
    (run,) = client.search_runs([exp.experiment_id])
    params = run.data.params
    assert params["plugins"] == plugin["path"]
    assert params[f"plugin.{plugin['module']}"].startswith("sha256:")
    assert run.info.status == "FINISHED"


def test_missing_plugin_and_duplicate_name_are_one_line_errors(capsys, tmp_path):
    err = one_line_error(capsys, ["run", "plugins=zf_no_such_plugin_mod", "--no-track"])
    assert "plugin 'zf_no_such_plugin_mod' not found" in err
    dup = tmp_path / f"zf_dup_{uuid.uuid4().hex[:8]}.py"
    dup.write_text("from zeroflow.optim import ZeroOrderOptimizer, register_optimizer\n"
                   "register_optimizer('zo-sgd', ZeroOrderOptimizer, accepts=('lr',))\n")
    err = one_line_error(capsys, ["run", f"plugins={dup}", "--no-track"])
    assert "failed while loading: optimizer 'zo-sgd' is already registered" in err
    broken = tmp_path / f"zf_broken_{uuid.uuid4().hex[:8]}.py"
    broken.write_text("raise RuntimeError('boom')\n")
    err = one_line_error(capsys, ["run", f"plugins={broken}", "--no-track"])
    assert f"plugin '{broken}' failed while loading: RuntimeError: boom" in err
    err = one_line_error(capsys, ["run", f"plugins={tmp_path / 'nothere.py'}", "--no-track"])
    assert "no such file or folder" in err
    space = tmp_path / "s.yaml"
    space.write_text("plugins: [zf_no_such_plugin_mod]\ngrid: {optimizer: [zo-sgd]}\n")
    err = one_line_error(capsys, ["sweep", str(space), "--dry-run"])
    assert f"{space}: plugin 'zf_no_such_plugin_mod' not found" in err


# ------------------------------------------------------------------- Ray
def test_plugin_with_two_query_workers_equals_in_process(plugin):
    """The pool starts Ray itself here, shipping the plugin (``py_modules``) to its actors."""
    import ray

    assert not ray.is_initialized()
    check_query_pool(plugins=plugin["path"], method=plugin["method"], optimizer=plugin["opt"],
                     init_cls=4, increment=6, q=2)


def test_two_trial_sweep_with_plugins_and_its_report(plugin, tmp_path):
    """The driver starts Ray with the plugin in its runtime environment; the report files the
    plugin's optimizer by its registered family and strategy, with no paper value."""
    import ray
    import yaml

    from zeroflow.report import build_report
    from zeroflow.sweep import run_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = tmp_path / "plug.yaml"
    space.write_text(yaml.safe_dump({
        "name": "plug", "plugins": [os.path.relpath(plugin["path"], tmp_path)],
        "base": tiny_trial(method=plugin["method"], epochs=1, limit_batches=2, init_cls=4,
                           increment=6),
        "grid": {"optimizer": ["zo-sgd", plugin["opt"]]},
        "resources": {"cpu": 1}, "run": {"max_failures": 0, "max_concurrent": 2}}))
    try:
        results, _ = run_sweep(space, storage=tmp_path / "runs", tracking_uri=uri, verbose=0)
    finally:
        ray.shutdown()
    assert results.num_errors == 0 and len(results) == 2
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("plug")
    children = [r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("zeroflow.role") == "trial"]
    assert sorted(r.data.params["optimizer"] for r in children) == sorted(
        ["zo-sgd", plugin["opt"]])
    assert all(r.data.params["plugins"] == plugin["path"] for r in children)
    assert all(r.data.params[f"plugin.{plugin['module']}"].startswith("sha256:")
               for r in children)
    report = build_report(["plug"], uri)
    text = report.text()
    rows = [line for line in text.splitlines() if "Plain" in line]
    assert rows, text
    assert any("SGD" in r and plugin["method"] in r for r in rows), rows
    # the paper has no cell for it: "—", or (no row of this table has one) the column is left
    # out with a line saying so
    assert all("—" in r for r in rows) or "Left out, empty in every row: paper" in text, text


# ------------------------------------------------------------------- the example package
EXAMPLE_CHECK = """
import sys
import numpy as np
from zeroflow import plugins
from zeroflow.config import make_config
from zeroflow.sweep import load_space
from zeroflow.testing import check_method, check_optimizer

tmp = sys.argv[1]
# the entry point alone registers everything (no plugins key)
cfg = make_config(optimizer="lozo", method="simplecil", dataset="digits-folder")
assert cfg.plugins == "" and cfg.rule == "sgd"
(p,) = [p for p in plugins.loaded() if p.module == "zeroflow_examples"]
assert plugins.params()["plugin.zeroflow_examples"] == "0.1.0", plugins.params()
assert p.source is None  # installed: nothing to ship
space = load_space(sys.argv[2])
assert {c.optimizer for c in space.configs} == {"zo-sgd", "lozo"}
assert {c.method for c in space.configs} == {"ease", "simplecil"}
for name in sorted({c.optimizer for c in space.configs}):
    check_optimizer(name)
keys = dict(dataset="digits-folder", download=True, data_root=tmp + "/data")
for method in sorted({c.method for c in space.configs}):
    check_method(method, tmp + "/" + method, optimizer="lozo", **keys)
print("example ok")
"""


def test_example_package_installs_and_its_space_passes_the_contract_checks(tmp_path):
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
           "--no-build-isolation", "--no-index", "--target", str(target), str(EXAMPLE)]
    subprocess.run(pip, check=True, capture_output=True, cwd=tmp_path)
    assert (target / "zeroflow_examples" / "lozo.py").exists()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(EXAMPLE_CHECK), str(tmp_path),
                          str(EXAMPLE / "plugins_demo.yaml")], env=env, capture_output=True,
                         text=True, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "example ok" in out.stdout


def test_simplecil_equals_nearest_prototype_of_the_pretrained_features(tmp_path):
    """SimpleCIL trains nothing: its accuracy is the optimizer's business of no one."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from zeroflow import plugins
        from zeroflow.trial import run_trial

        plugins.load(["zeroflow_examples"])
        a = run_trial(tiny_trial(method="simplecil", optimizer="zo-sgd", epochs=1))
        b = run_trial(tiny_trial(method="simplecil", optimizer="lozo", epochs=3))
    finally:
        sys.path.remove(str(EXAMPLE))
    assert np.array_equal(a.matrix.a, b.matrix.a, equal_nan=True)
    assert a.summary["forward_passes"] == 0 and a.matrix.seen[0] > 50.0
