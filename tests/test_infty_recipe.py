"""The authors' code's recipe (THUDM/INFTY at 2383906, tune_spaces/table1_infty.yaml and its
query-budget and enhancement variants) resolves, through the project's own space resolution,
to the settings typed here from INFTY's files for every (dataset, optimizer); every shipped
space with ZO-FC sets its head lr; the enhancement spaces run both forms of Tables 3 and 4."""

from pathlib import Path

import pytest

from zeroflow import optim
from zeroflow.sweep.plan import planned_trials, resolve_space
from zeroflow.sweep.space import load_space

ROOT = Path(__file__).resolve().parents[1] / "tune_spaces"
ZO_SGD = ("zo-sgd", "zo-sgd-sign", "zo-sgd-conserve")
ZO_ADAM = ("zo-adam", "zo-adam-sign", "zo-adam-conserve")
# examples/infty_configs/gradient_bans/zeroflow.yaml (init_epochs, init_lr and its comment,
# alpha, q, zo_eps, two_side), examples/PILOT/utils/core.py (momentum, weight decay),
# src/infty/optim/gradient_bans/zeroflow.py (constant base lr; forward-grad's fixed 1e-3, no
# momentum or decay; every tensor requiring grad perturbed)
ZO_RECIPE = dict(epochs=100, q=1, mu=1e-3, difference="central", ease_alpha=0.9,
                 zo_lr_schedule="constant", ease_perturb_prototypes=True, history=0.0,
                 sparsity=0.0)
ZO_RULE = {**{n: dict(lr=1e-4, momentum=0.9, weight_decay=5e-4) for n in ZO_SGD},
           **{n: dict(lr=1e-3, momentum=0.9, weight_decay=5e-4) for n in ZO_ADAM},
           "forward-grad": dict(lr=1e-3, momentum=0.0, weight_decay=0.0)}
# FO rows run EASE's own files (sun-hailong/CVPR24-Ease exps/ease_*_in21k.json): lr, batch
# size, weight decay, epochs, alpha; fo-adam's lr 1e-3 is ours
EASE = {"cifar100": (0.025, 48, 5e-4, 20, 0.1), "cub": (0.008, 32, 5e-4, 20, 0.05),
        "imagenet-a": (0.05, 32, 5e-3, 20, 0.1), "omnibenchmark": (0.01, 16, 5e-4, 20, 0.1)}


def trials(name):
    return planned_trials(load_space(resolve_space(name)))


def test_table1_infty_resolves_to_the_authors_settings_for_every_dataset_and_optimizer():
    got = {(t["dataset"], t["optimizer"]): t for t in trials("table1_infty")}
    assert set(got) == {(d, o) for d in EASE for o in optim.NAMES}
    for (dataset, name), t in got.items():
        lr, batch, wd, epochs, alpha = EASE[dataset]
        assert t["method"] == "ease" and t["batch_size"] == batch, (dataset, name)
        if optim.is_first_order(name):
            expected = dict(lr=lr if name == "fo-sgd" else 1e-3, weight_decay=wd, epochs=epochs,
                            ease_alpha=alpha, zo_lr_schedule="cosine",
                            ease_perturb_prototypes=False)
        else:
            expected = {**ZO_RECIPE, **ZO_RULE[name]}
        assert {k: t[k] for k in expected} == expected, (dataset, name)


@pytest.mark.parametrize("name", ["query_budget_infty", "enhancements_infty"])
def test_the_budget_and_enhancement_variants_run_the_same_zo_recipe(name):
    reference = {t["optimizer"]: t for t in trials("table1_infty")
                 if t["dataset"] == "imagenet-a"}
    keys = [*ZO_RECIPE, "lr", "momentum", "weight_decay", "batch_size"]
    for t in trials(name):
        base = reference[t["optimizer"]]
        varied = {"q", "history", "sparsity"} & {k for k in keys if t[k] != base[k]}
        assert {k: t[k] for k in keys if k not in varied} == {
            k: base[k] for k in keys if k not in varied}, t


@pytest.mark.parametrize("name,hybrid", [("enhancements", (14, 15, 16)),
                                         ("enhancements_infty", (70, 75, 80, 84))])
def test_enhancement_spaces_run_both_forms_and_the_papers_hybrid_range(name, hybrid):
    ts = trials(name)
    history = {(t["history"], t["history_mode"]) for t in ts if t["history"] > 0}
    assert history == {(a, m) for a in (0.2, 0.4, 0.6, 0.8) for m in ("estimate", "direction")}
    sparse = {(t["sparsity"], t["sparsity_mask"], t["sparsity_resample"]) for t in ts
              if t["sparsity"] > 0}
    assert {(m, r) for _, m, r in sparse} == {("exact", "direction"), ("infty", "task")}
    assert len(sparse) == 18
    fo = [t for t in ts if t["hybrid_epochs"]]
    assert tuple(t["hybrid_epochs"] for t in fo) == hybrid
    assert all(0.70 <= t["hybrid_epochs"] / t["epochs"] <= 0.84 for t in fo)
    assert all(t["hybrid_fo_lr"] == 0.05 for t in fo)  # EASE's ImageNet-A fo-sgd lr


def test_every_shipped_space_with_zofc_sets_its_head_lr():
    with_zofc = 0
    for path in sorted(ROOT.glob("*.yaml")):
        for c in load_space(path).configs:  # validated configs: searched spaces too
            if c.method == "zofc":
                with_zofc += 1
                assert c.fc_lr is not None, path.name
    assert with_zofc
