"""Pluggy hook specifications. Each hook receives a ``register`` callback.

``register(obj, override=False)`` adds one component. A name that already exists is an error
naming both plugins, unless ``override=True`` (how a plugin replaces a built-in).
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("ift_engine")
hookimpl = pluggy.HookimplMarker("ift_engine")

Register = Callable[..., None]


@hookspec
def register_templates(register: Register) -> None:
    """Register ``InstructionTemplate`` objects."""


@hookspec
def register_parsers(register: Register) -> None:
    """Register ``AnswerParser`` objects that turn a model's answer into a node output."""


@hookspec
def register_models(register: Register) -> None:
    """Register model backends: ``Model`` subclasses with a ``backend`` name and ``load``."""


@hookspec
def register_model_aliases(register: Register) -> None:
    """Register ``ModelAlias`` objects: short names that locate a model folder."""


@hookspec
def register_augmenters(register: Register) -> None:
    """Register ``Augmenter`` subclasses that rewrite training input text."""


@hookspec
def register_lexicons(register: Register) -> None:
    """Register ``Lexicon`` objects (synonyms) for the synonym-replacement augmenter."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register ``DatasetSource`` subclasses that produce training records by name."""


@hookspec
def register_ensemblers(register: Register) -> None:
    """Register ``Ensembler`` subclasses that combine several models into one model."""


@hookspec
def register_settings(register: Register) -> None:
    """Register ``PluginSettings(name, model)``: the pydantic model that validates the plugin's
    configuration under ``plugins: {name: {...}}`` in a workflow file."""
