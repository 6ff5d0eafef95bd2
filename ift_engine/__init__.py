"""ift_engine: instruction fine-tuning and composed tasks on fine-tuned models.

The public names are imported on first use (PEP 562), so that importing the package (as the
``ift`` command does before anything else) loads neither pydantic nor torch: the command's
entry point is in charge, Ctrl-C included, before any heavy import starts.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .errors import (
    IftError,
    InputError,
    ModelError,
    NodeError,
    ParseError,
    PluginError,
    RegistrationError,
    TemplateError,
    TrainError,
    WorkflowError,
)

if TYPE_CHECKING:
    from .engine import Engine
    from .hookspecs import hookimpl
    from .models import GenerationSettings, MockModel, Model, ModelAlias, ModelSpec
    from .parsers import AnswerParser
    from .settings import PluginSettings, current_settings
    from .templates import AnswerForm, InstructionTemplate
    from .training import TrainResult, TrainSpec, train
    from .workflow import NodeSpec, RunResult, Workflow, WorkflowSpec

#: Each lazily imported public name and the module it comes from.
LAZY = {
    "Engine": "engine",
    "hookimpl": "hookspecs",
    "GenerationSettings": "models",
    "MockModel": "models",
    "Model": "models",
    "ModelAlias": "models",
    "ModelSpec": "models",
    "AnswerParser": "parsers",
    "PluginSettings": "settings",
    "current_settings": "settings",
    "AnswerForm": "templates",
    "InstructionTemplate": "templates",
    "TrainResult": "training",
    "TrainSpec": "training",
    "train": "training",
    "NodeSpec": "workflow",
    "RunResult": "workflow",
    "Workflow": "workflow",
    "WorkflowSpec": "workflow",
}


def __getattr__(name: str) -> Any:
    module = LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *LAZY})


try:
    __version__ = version("ift-engine")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "AnswerForm",
    "AnswerParser",
    "Engine",
    "GenerationSettings",
    "IftError",
    "InputError",
    "InstructionTemplate",
    "MockModel",
    "Model",
    "ModelAlias",
    "ModelError",
    "ModelSpec",
    "NodeError",
    "NodeSpec",
    "ParseError",
    "PluginSettings",
    "PluginError",
    "RegistrationError",
    "RunResult",
    "TemplateError",
    "TrainError",
    "TrainResult",
    "TrainSpec",
    "Workflow",
    "WorkflowError",
    "WorkflowSpec",
    "current_settings",
    "hookimpl",
    "train",
]
