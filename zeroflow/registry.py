"""``Registry``: the one shape of every name → entry table (optimizers, methods, backbones,
datasets), after timm's model registry.

A registry is an ordered, read-only mapping (``names()`` in registration order, ``in``,
iteration, ``items()``) with one way to fail: ``lookup`` of an unknown name raises the same
``ConfigError`` everywhere, naming the kind and the known names; ``add`` of a name already
there raises too, so a plug-in can never silently replace a built-in.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from zeroflow.errors import ConfigError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one ``kind`` (``"optimizer"``, ``"method"``, ...) by name.

    hint: what else is accepted besides the names, appended to the unknown-name error (e.g.
    any timm ViT tag, for backbones)."""

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None, hint: str = ""):
        self.kind, self.hint = kind, hint
        self._entries: dict[str, T] = {}
        for name, entry in (entries or {}).items():
            self.add(name, entry)

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name`` (a new, non-empty name); returns the entry."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ConfigError(f"{self.kind} {name!r} is already registered; choose another name")
        self._entries[name] = entry
        return entry

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def lookup(self, name: str) -> T:
        """The entry of ``name``; ``ConfigError`` (``unknown``) if there is none."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def unknown(self, name) -> ConfigError:
        """The one error for a name that is not registered."""
        hint = f" ({self.hint})" if self.hint else ""
        return ConfigError(f"unknown {self.kind} {name!r}; choose one of: "
                           f"{', '.join(self._entries)}{hint}")

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
