"""The layering of ``zeroflow/`` (docs/architecture.md): every import, function-local ones
included, goes to a lower row of ``LAYERS`` or within a row without a cycle, and no module
imports another module's ``_private`` name. A new module is placed in a row here."""

import ast
from pathlib import Path

import zeroflow

PACKAGE = Path(zeroflow.__file__).parent

LAYERS = [  # bottom first
    {"registry", "seeding", "errors", "metrics", "plotting", "plugins", "key_help"},
    {"optim", "methods", "models", "data"},
    {"config"},
    {"observers", "batches", "steppers", "assembly", "checkpoint", "evaluation"},
    {"analysis", "distributed"},
    {"trial"},
    {"tracking", "testing"},
    {"sweep", "report"},
    {"cli"},
]


def _unit(module: str) -> str:
    """``zeroflow.sweep.space`` → ``sweep``: a subpackage or a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports():
    """(importing module, imported module, imported names) for every zeroflow import."""
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        package = parts[:-1]  # what a relative import starts from
        module = ".".join(package if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package[:len(package) - node.level + 1], *filter(None, [
                        node.module])])
                if not base.startswith("zeroflow"):
                    continue
                names = [a.name for a in node.names]
                targets = [f"{base}.{n}" for n in names] if base == "zeroflow" else [base]
                for target in targets:
                    yield module, target, names
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("zeroflow"):
                        yield module, alias.name, []


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, target, _ in _imports():
        a, b = _unit(module), _unit(target)
        if a and b and a != b:
            edges.setdefault(a, set()).add(b)
    return edges


def test_every_unit_has_a_row():
    units = {p.relative_to(PACKAGE).with_suffix("").parts[0] for p in PACKAGE.rglob("*.py")}
    units -= {"__init__"}  # the package itself: its version only
    placed = set().union(*LAYERS)
    assert units - placed == set(), "place these in LAYERS (and docs/architecture.md)"
    assert placed - units == set()


def test_imports_go_down_the_layers_without_cycles():
    row = {unit: i for i, units in enumerate(LAYERS) for unit in units}
    edges = _edges()
    upward = [f"{a} -> {b}" for a, bs in edges.items() for b in bs if row[b] > row[a]]
    assert upward == []

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(b == goal or (b not in seen and not seen.add(b) and reaches(b, goal, seen))
                   for b in edges.get(start, ()))

    cycles = sorted(f"{a} <-> {b}" for a, bs in edges.items() for b in bs
                    if reaches(b, a, set()))
    assert cycles == []


def test_no_module_imports_another_modules_private_name():
    private = [f"{module} imports {target}.{name}" for module, target, names in _imports()
               for name in names if name.startswith("_") and not name.startswith("__")
               and _unit(module) != _unit(target)]
    assert private == []
