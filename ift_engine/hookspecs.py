"""Pluggy hook specifications. Each hook receives a ``register`` callback.

``register(obj, override=False)`` adds one component. A name that already exists is an error
naming both plugins, unless ``override=True`` (how a plugin replaces a built-in).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

import pluggy

if TYPE_CHECKING:
    from .augment import Augmenter, Lexicon
    from .ensemble import Ensembler
    from .models.base import Model, ModelAlias
    from .parsers import AnswerParser
    from .settings import PluginSettings
    from .sources import DatasetSource
    from .templates import InstructionTemplate

hookspec = pluggy.HookspecMarker("ift_engine")
hookimpl = pluggy.HookimplMarker("ift_engine")

Component = TypeVar("Component", contravariant=True)


class Register(Protocol[Component]):
    """What a hook receives: ``register(component, override=False)``."""

    def __call__(self, component: Component, /, override: bool = False) -> None: ...


@hookspec
def register_templates(register: Register[InstructionTemplate]) -> None:
    """Register ``InstructionTemplate`` objects."""


@hookspec
def register_parsers(register: Register[AnswerParser]) -> None:
    """Register ``AnswerParser`` objects that turn a model's answer into a node output."""


@hookspec
def register_models(register: Register[type[Model]]) -> None:
    """Register model backends: ``Model`` subclasses with a ``backend`` name and ``load``."""


@hookspec
def register_model_aliases(register: Register[ModelAlias]) -> None:
    """Register ``ModelAlias`` objects: short names that locate a model folder."""


@hookspec
def register_augmenters(register: Register[type[Augmenter]]) -> None:
    """Register ``Augmenter`` subclasses that rewrite training input text."""


@hookspec
def register_lexicons(register: Register[Lexicon]) -> None:
    """Register ``Lexicon`` objects (synonyms) for the synonym-replacement augmenter."""


@hookspec
def register_datasets(register: Register[type[DatasetSource]]) -> None:
    """Register ``DatasetSource`` subclasses that produce training records by name."""


@hookspec
def register_ensemblers(register: Register[type[Ensembler]]) -> None:
    """Register ``Ensembler`` subclasses that combine several models into one model."""


@hookspec
def register_settings(register: Register[PluginSettings]) -> None:
    """Register ``PluginSettings(name, model)``: the pydantic model that validates the plugin's
    configuration under ``plugins: {name: {...}}`` in a workflow file."""
