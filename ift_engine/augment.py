"""The augmenter interface: rewrite a training input's text, deterministically for a given rng."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod


class Augmenter(ABC):
    """Rewrites input text (never targets). ``name`` is how YAML and the registry refer to it."""

    name: str

    @abstractmethod
    def augment(self, text: str, rng: random.Random) -> str:
        """Return a rewritten ``text``; all randomness must come from ``rng``."""
