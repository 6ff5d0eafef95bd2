"""The plugin manager: built-in plugins, entry-point plugins, and the component registries.

Built-in components register through the same hooks as third-party plugins. Third-party
plugins come from the entry-point group ``ift_engine``; each loads in its own ``try`` so one
broken plugin is one warning, not a crash (``IFT_ENGINE_STRICT_PLUGINS=1`` makes it fatal).
``IFT_ENGINE_LOAD_PLUGINS=a,b`` loads only the named entry points or distributions; set and
empty, it loads none.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points, version
from operator import attrgetter
from typing import Any

import pluggy

from . import hookspecs
from .augment import Augmenter, Lexicon
from .ensemble import Ensembler
from .errors import IftError, PluginError, TemplateError
from .models.base import Model, ModelAlias
from .parsers import AnswerParser
from .registry import Registry
from .settings import PluginSettings
from .sources import DatasetSource
from .templates import InstructionTemplate, TemplateSpec

ENTRY_POINT_GROUP = "ift_engine"
DEFAULT_PLUGINS = (
    "ift_engine.default_plugins.templates",
    "ift_engine.default_plugins.parsers",
    "ift_engine.default_plugins.models",
    "ift_engine.default_plugins.augmenters",
    "ift_engine.default_plugins.datasets",
    "ift_engine.default_plugins.ensemblers",
)


class PluginLoadWarning(UserWarning):
    """A third-party plugin failed to load and was skipped."""


def _kind(label: str, expected: type, name_attribute: str = "name") -> Any:
    """A dataclass field holding a fresh registry of one kind of component."""
    return field(default_factory=lambda: Registry(label, expected, attrgetter(name_attribute)))


@dataclass
class Components:
    """Every registered component, by kind. Built once from a plugin manager."""

    templates: Registry[InstructionTemplate] = _kind("template", InstructionTemplate)
    parsers: Registry[AnswerParser] = _kind("parser", AnswerParser)
    models: Registry[type[Model]] = _kind("model backend", Model, "backend")
    model_aliases: Registry[ModelAlias] = _kind("model alias", ModelAlias)
    augmenters: Registry[type[Augmenter]] = _kind("augmenter", Augmenter)
    lexicons: Registry[Lexicon] = _kind("lexicon", Lexicon)
    settings: Registry[PluginSettings] = _kind("plugin settings", PluginSettings)
    datasets: Registry[type[DatasetSource]] = _kind("dataset source", DatasetSource)
    ensemblers: Registry[type[Ensembler]] = _kind("ensembler", Ensembler)

    @classmethod
    def from_plugin_manager(cls, pm: pluggy.PluginManager) -> Components:
        components = cls()
        kinds = (
            "templates",
            "parsers",
            "models",
            "model_aliases",
            "augmenters",
            "lexicons",
            "datasets",
            "ensemblers",
            "settings",
        )
        for kind in kinds:
            registry = getattr(components, kind)
            caller = getattr(pm.hook, f"register_{kind}")
            # Call each implementation ourselves so the callback knows which plugin registers.
            for impl in caller.get_hookimpls():  # registration order: built-ins first
                plugin_name = impl.plugin_name

                def register(
                    obj: Any, override: bool = False, _p: str = plugin_name, _r: Registry = registry
                ) -> None:
                    _r.add(obj, _p, override=override)

                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        f"plugin '{plugin_name}' failed in register_{kind}: {type(exc).__name__}: {exc}"
                    ) from exc
        return components

    def with_templates(
        self, declared: Sequence[TemplateSpec], error: type[IftError], source: str | None = None
    ) -> Components:
        """These components plus the templates a file declares under ``templates:``, each
        linted as a registered one. A name that is already taken (by a plugin or an earlier
        entry) is an ``error`` naming both; the plugins' own registry is left unchanged."""
        if not declared:
            return self
        prefix = f"{source}: " if source else ""
        registry = self.templates.copy()
        for index, spec in enumerate(declared):
            where = f"templates[{index}]"
            try:
                template = spec.build()
            except TemplateError as exc:
                raise error(f"{prefix}{where}: {exc}") from None
            if spec.name in registry:
                owner = registry.plugin_of(spec.name)
                owner = owner if owner.startswith("templates[") else f"plugin '{owner}'"
                raise error(
                    f"{prefix}{where}: template '{spec.name}' is already defined by {owner}; "
                    "give the one declared here another name"
                )
            registry.add(template, where)
        return replace(self, templates=registry)


@dataclass(frozen=True)
class FailedPlugin:
    """An entry-point plugin that could not be loaded, and why."""

    name: str
    distribution: str
    version: str
    error: str


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, remembering the plugins that failed to load (``ift plugins`` lists them)."""

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.failed: list[FailedPlugin] = []


def build_plugin_manager(load_entry_points: bool = True) -> PluginManager:
    """A fresh plugin manager with the built-ins and (optionally) the entry-point plugins."""
    pm = PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
    if load_entry_points:
        _load_entry_points(pm)
    return pm


def _load_entry_points(pm: PluginManager) -> None:
    allowed_env = os.environ.get("IFT_ENGINE_LOAD_PLUGINS")
    allowed = None
    if allowed_env is not None:
        allowed = {name.strip() for name in allowed_env.split(",") if name.strip()}
    strict = os.environ.get("IFT_ENGINE_STRICT_PLUGINS", "") not in ("", "0")
    available = entry_points(group=ENTRY_POINT_GROUP)
    for ep in available:
        dist = ep.dist.name if ep.dist else "unknown distribution"
        if allowed is not None and ep.name not in allowed and dist not in allowed:
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            message = f"plugin '{ep.name}' from distribution '{dist}' failed to load and was skipped: {error}"
            if strict:
                raise PluginError(message.replace("and was skipped", "")) from exc
            warnings.warn(message, PluginLoadWarning, stacklevel=2)
            pm.failed.append(FailedPlugin(ep.name, dist, ep.dist.version if ep.dist else "?", error))
    known = {ep.name for ep in available} | {ep.dist.name for ep in available if ep.dist}
    for name in sorted((allowed or set()) - known):
        warnings.warn(
            f"IFT_ENGINE_LOAD_PLUGINS names '{name}', but no installed plugin or distribution has that "
            f"name (installed: {', '.join(sorted(known)) or 'none'})",
            PluginLoadWarning,
            stacklevel=2,
        )


def describe_plugins(pm: PluginManager) -> list[dict[str, Any]]:
    """Name, distribution, version and implemented hooks of every registered plugin, then the
    plugins that failed to load, with their error."""
    dists = {ep.name: ep.dist for ep in entry_points(group=ENTRY_POINT_GROUP)}
    rows = []
    for name, plugin in pm.list_name_plugin():
        dist = dists.get(name)
        rows.append(
            {
                "name": name,
                "distribution": dist.name if dist else "ift-engine",
                "version": dist.version if dist else version("ift-engine"),
                "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
            }
        )
    for failed in pm.failed:
        rows.append(
            {
                "name": failed.name,
                "distribution": failed.distribution,
                "version": failed.version,
                "hooks": [],
                "error": failed.error,
            }
        )
    return rows


def plugin_manager() -> PluginManager:
    """A plugin manager over the built-in and the installed plugins, built now (the name plugin
    test suites have used; ``build_plugin_manager`` takes options)."""
    return build_plugin_manager()


def installed_components() -> Components:
    """The component registries of the built-in and the installed plugins, collected now. An
    ``Engine`` holds one set for a whole program; this is what it starts from."""
    return Components.from_plugin_manager(build_plugin_manager())


#: The name plugin authors' code and tests have used since the first release.
components = installed_components


def reset() -> None:
    """Nothing to forget any more: components are collected when asked for, never cached
    process-wide. Kept so that plugin test suites written for earlier releases still run."""
    warnings.warn(
        "ift_engine.plugins.reset() does nothing: components() reads the installed plugins on every "
        "call, and an Engine holds one set for a program",
        DeprecationWarning,
        stacklevel=2,
    )
