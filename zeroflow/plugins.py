"""Plugins: modules that add optimizers, methods, datasets and backbones through the public
registration functions (``zeroflow.optim.register_optimizer``, ``zeroflow.methods.register_method``,
``zeroflow.data.register_dataset``, ``zeroflow.models.register_backbone``).

A plugin is imported, and so registers, in every process that builds a trial before any name is
resolved: ``TrialConfig`` loads them first. Three sources, all loaded the same way:

* the ``plugins`` trial key (``zeroflow run plugins=pkg.mod,other``; a space file's top-level
  ``plugins: [...]`` sets it for every trial): an importable module name, or the path of a
  ``.py`` file or a package folder (its parent folder is put on ``sys.path``);
* installed packages declaring the entry-point group ``zeroflow.plugins`` (loaded once per
  process, automatically);
* ``$ZEROFLOW_PLUGINS`` (comma-separated): what a driver hands its Ray workers (``runtime_env``).

``runtime_env()`` is what a process that starts Ray passes on: the sources of plugins that no
installed distribution provides (``py_modules``), so a cluster's nodes need no copy, and the
module names to import (``env_vars``). ``params()`` names each loaded plugin with its version
(its distribution's, else ``sha256:`` of its source) for the run's MLflow params.
A missing or failing plugin is one ``PluginError`` naming it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from zeroflow.errors import PluginError

ENTRY_POINT_GROUP = "zeroflow.plugins"
ENV_VAR = "ZEROFLOW_PLUGINS"


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin: its module, version and, when no installed distribution provides it,
    the file or package folder to ship to Ray workers (``source``)."""

    module: str
    version: str
    source: str | None


_LOADED: dict[str, Plugin] = {}  # by module name, in load order
_SPECS: dict[str, str] = {}  # spec as given → module name
_entry_points_loaded = False


def parse(value) -> tuple[str, ...]:
    """``"a, b"`` or ``["a", "b"]`` (or None/"") → ``("a", "b")``."""
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(s for s in (str(i).strip() for i in items) if s)


def absolute(spec: str, folder: str | os.PathLike | None = None) -> str:
    """A path spec made absolute (relative to ``folder`` where it exists there, else to the
    working directory), so that a Ray trial, which changes directory, finds it; a module name
    is returned as it is."""
    if not _is_path(spec):
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute() and folder is not None and (Path(folder) / path).exists():
        path = Path(folder) / path
    return str(path.absolute()) if path.exists() else spec


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def load(specs=()) -> list[Plugin]:
    """Import the plugins ``specs`` names (after the entry-point ones and ``$ZEROFLOW_PLUGINS``,
    each module once per process); returns those of ``specs``."""
    load_entry_points()
    for spec in parse(os.environ.get(ENV_VAR)):
        load_one(spec)
    return [load_one(spec) for spec in parse(specs)]


def load_entry_points() -> None:
    """Import every installed ``zeroflow.plugins`` entry point (once per process)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        _import(f"entry point {ep.name!r} ({ep.value})", ep.module, ep.module)


def load_one(spec: str) -> Plugin:
    """Import one plugin: a module name or the path of a ``.py`` file or package folder."""
    if spec in _SPECS:
        return _LOADED[_SPECS[spec]]
    path = Path(spec).expanduser()
    if _is_path(spec):
        name = path.stem if path.suffix == ".py" else path.name
        if path.exists():
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
        elif importlib.util.find_spec(name) is None:  # not shipped here either
            raise PluginError(f"plugin {spec!r}: no such file or folder; give the path of a .py "
                              "file or a package folder, or an importable module name")
    else:
        name = spec
    plugin = _import(f"plugin {spec!r}", name, spec)
    _SPECS[spec] = plugin.module
    return plugin


def _import(what: str, name: str, spec: str) -> Plugin:
    if name in _LOADED:
        return _LOADED[name]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and (name == err.name or name.startswith(err.name + ".")):
            raise PluginError(
                f"{what} not found: no module named {err.name!r}; install it, add its folder "
                "to PYTHONPATH, or give the path of its .py file") from None
        raise PluginError(f"{what} failed while loading: {_one_line(err)}; "
                          f"`python -c 'import {name}'` shows where") from None
    except Exception as err:  # noqa: BLE001 - any failure of a user's module is named
        raise PluginError(f"{what} failed while loading: {_one_line(err)}; "
                          f"`python -c 'import {name}'` shows where") from None
    plugin = Plugin(name, *_version_and_source(module))
    _LOADED[name] = plugin
    return plugin


def _one_line(err: BaseException) -> str:
    from zeroflow.errors import ZeroflowError

    text = str(err) if isinstance(err, ZeroflowError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split())


def _version_and_source(module) -> tuple[str, str | None]:
    """(its distribution's version, None) if an installed distribution provides the module,
    else (``sha256:<hex>`` of its top-level package's source, that file or folder)."""
    top = module.__name__.split(".")[0]
    dists = metadata.packages_distributions().get(top, [])
    if dists:
        return metadata.version(dists[0]), None
    root = sys.modules[top]
    if hasattr(root, "__path__"):
        source = Path(list(root.__path__)[0])
        files = sorted(p for p in source.rglob("*.py") if "__pycache__" not in p.parts)
    else:
        source = Path(root.__file__)
        files = [source]
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(source.parent)).encode())
        digest.update(f.read_bytes())
    return f"sha256:{digest.hexdigest()[:16]}", str(source)


def loaded() -> list[Plugin]:
    """Every plugin imported in this process, in load order."""
    return list(_LOADED.values())


def params() -> dict[str, str]:
    """``{"plugin.<module>": version}`` for every loaded plugin (a run's MLflow params)."""
    return {f"plugin.{p.module}": p.version for p in _LOADED.values()}


def runtime_env() -> dict:
    """What Ray workers need to import the same plugins: ``py_modules`` (sources of plugins
    no installed distribution provides) and ``env_vars`` (the modules to import); {} if none."""
    if not _LOADED:
        return {}
    env: dict = {"env_vars": {ENV_VAR: ",".join(_LOADED)}}
    sources = list(dict.fromkeys(p.source for p in _LOADED.values() if p.source))
    if sources:
        env["py_modules"] = sources
    return env
