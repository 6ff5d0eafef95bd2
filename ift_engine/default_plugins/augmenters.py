"""Built-in augmenters (EDA operations, character noise) and synonym lexicons."""

from __future__ import annotations

from importlib.resources import files

import yaml

from ..augment import (
    Augmenter,
    CharacterNoise,
    Lexicon,
    RandomDeletion,
    RandomInsertion,
    RandomSwap,
    SynonymReplacement,
)
from ..hookspecs import Register, hookimpl


@hookimpl
def register_augmenters(register: Register[type[Augmenter]]) -> None:
    for augmenter in (
        SynonymReplacement,
        RandomInsertion,
        RandomSwap,
        RandomDeletion,
        CharacterNoise,
    ):
        register(augmenter)


@hookimpl
def register_lexicons(register: Register[Lexicon]) -> None:
    folder = files(__package__).joinpath("lexicons")
    for resource in sorted(folder.iterdir(), key=str):
        if resource.name.endswith(".yaml"):
            data = yaml.safe_load(resource.read_text(encoding="utf-8"))
            synonyms = {k: tuple(v) for k, v in data["synonyms"].items()}
            register(Lexicon(data["name"], data["language"], synonyms))
