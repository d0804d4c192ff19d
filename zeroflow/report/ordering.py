"""How the report orders and prints values: optimizers, methods and datasets in their
registries' order (so a new one needs no edit here), other values by number, then text, then
missing (``ABSENT``: a row key of a row without any run)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

ABSENT = object()  # an extra row key of a row that has no run at all


@lru_cache(maxsize=1)
def order() -> dict[str, tuple]:
    """Rows and columns list optimizers, methods and datasets in their registries' order
    (optimizers grouped by family: ``optim.report_order``); other values by value."""
    from zeroflow import optim
    from zeroflow.data import DATASETS
    from zeroflow.methods import METHODS

    return {"optimizer": tuple(optim.report_order()), "method": METHODS.names(),
            "dataset": DATASETS.names()}


def fmt_value(value: Any) -> str:
    if value is ABSENT:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def rank(key: str, value: Any) -> tuple:
    known = order().get(key, ())
    if value in known:
        return (0, known.index(value), "")
    if value is None or value is ABSENT:
        return (2, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (1, math.inf, str(value))


def sorted_values(key: str, values) -> list:
    """The distinct ``values`` of config key ``key`` in report order."""
    return sorted(set(values), key=lambda v: rank(key, v))
