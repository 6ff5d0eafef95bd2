"""The ensembler interface: combine several member models into one model.

An ensemble is itself a ``Model`` (same ``generate``/``classify``), so a workflow node uses an
ensemble exactly as it uses a single model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from .models.base import Model


class Ensembler(ABC):
    """Builds an ensemble model from members and their weights."""

    name: str

    @abstractmethod
    def build(self, members: Sequence[Model], weights: Sequence[float]) -> Model:
        """Return a model whose answers combine the members' answers."""
