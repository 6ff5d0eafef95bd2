"""Model backends and resolution."""

from .base import GenerationSettings, Model, ModelAlias
from .mock import MockModel
from .resolve import ModelPool, ModelSpec

__all__ = ["GenerationSettings", "Model", "ModelAlias", "ModelPool", "ModelSpec", "MockModel"]
