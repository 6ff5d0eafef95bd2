"""Typed registries with one collision rule.

Each kind of component (templates, parsers, model backends, model aliases, augmenters,
ensemblers) lives in a ``Registry`` that checks the type of what is registered and remembers
which plugin registered it. Registering a name twice is an error naming both plugins unless the
newcomer passes ``override=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import IftError, RegistrationError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    obj: T
    plugin: str


class Registry(Generic[T]):
    """Named components of one kind.

    ``kind`` is the word used in messages ("template", "model backend"); ``expected`` the type
    every component must be an instance (or, for classes, a subclass) of; ``name_of`` reads the
    component's name.
    """

    def __init__(self, kind: str, expected: type, name_of: Callable[[T], str]) -> None:
        self.kind = kind
        self._expected = expected
        self._name_of = name_of
        self._entries: dict[str, Entry[T]] = {}

    def add(self, obj: T, plugin: str, override: bool = False) -> None:
        ok = issubclass(obj, self._expected) if isinstance(obj, type) else isinstance(obj, self._expected)
        if not ok:
            raise RegistrationError(
                f"plugin '{plugin}' registered {obj!r} as a {self.kind}, "
                f"but a {self.kind} must be a {self._expected.__name__}"
            )
        name = self._name_of(obj)
        if not isinstance(name, str) or not name:
            raise RegistrationError(f"plugin '{plugin}' registered a {self.kind} without a name")
        existing = self._entries.get(name)
        if existing is not None and not override:
            raise RegistrationError(
                f"{self.kind} '{name}' from plugin '{plugin}' collides with the one from plugin "
                f"'{existing.plugin}'; rename it, or pass override=True to replace it"
            )
        self._entries[name] = Entry(obj, plugin)

    def copy(self) -> Registry[T]:
        """A registry with the same entries, to add to without changing this one."""
        other: Registry[T] = Registry(self.kind, self._expected, self._name_of)
        other._entries = dict(self._entries)
        return other

    def get(self, name: str) -> T:
        entry = self._entries.get(name)
        if entry is None:
            raise IftError(f"unknown {self.kind} '{name}' (known: {self.known()})")
        return entry.obj

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def known(self) -> str:
        return ", ".join(self.names()) or "none"

    def plugin_of(self, name: str) -> str:
        return self._entries[name].plugin
