"""The one registry shape: optimizers, methods, backbones and datasets are each a read-only,
ordered mapping with ``names()``, one unknown-name error and refused duplicate names."""

import pytest

from zeroflow import optim
from zeroflow.data import DATASETS
from zeroflow.errors import ConfigError
from zeroflow.methods import METHODS
from zeroflow.models import BACKBONES
from zeroflow.registry import Registry


@pytest.mark.parametrize("registry", [optim.REGISTRY, METHODS, BACKBONES, DATASETS],
                         ids=lambda r: r.kind)
def test_every_registry_has_the_one_shape(registry):
    names = registry.names()
    assert names and list(registry) == list(names) and all(n in registry for n in names)
    assert registry.lookup(names[0]) is registry[names[0]]
    with pytest.raises(ConfigError) as err:
        registry.lookup("no-such-name")
    assert str(err.value).startswith(
        f"unknown {registry.kind} 'no-such-name'; choose one of: {', '.join(names)}")
    with pytest.raises(ConfigError, match="already registered"):
        registry.add(names[0], registry[names[0]])
    assert registry.names() == names  # the refused duplicate changed nothing


def test_a_new_entry_is_listed_after_the_others():
    widgets = Registry("widget", {"a": 1})
    widgets.add("b", 2)
    assert widgets.names() == ("a", "b") and dict(widgets) == {"a": 1, "b": 2}
    with pytest.raises(ConfigError, match="non-empty string"):
        widgets.add("", 3)


def test_reports_take_family_strategy_and_order_from_the_optimizer_registry():
    assert optim.report_order() == ["fo-sgd", "zo-sgd", "zo-sgd-sign", "zo-sgd-conserve",
                                    "fo-adam", "zo-adam", "zo-adam-sign", "zo-adam-conserve",
                                    "forward-grad"]
    spec = optim.REGISTRY["zo-adam-conserve"]
    assert (spec.family, spec.strategy) == ("Adam", "Conserve")
    assert optim.FIRST_ORDER == ("fo-sgd", "fo-adam")
