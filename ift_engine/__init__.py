"""ift_engine: instruction fine-tuning and composed tasks on fine-tuned models."""

from importlib.metadata import PackageNotFoundError, version

from .errors import (
    IftError,
    ModelError,
    NodeError,
    ParseError,
    PluginError,
    RegistrationError,
    TemplateError,
    TrainError,
    WorkflowError,
)
from .hookspecs import hookimpl
from .models import GenerationSettings, MockModel, Model, ModelAlias, ModelSpec
from .parsers import AnswerParser
from .settings import PluginSettings, current_settings
from .templates import AnswerForm, InstructionTemplate
from .training import TrainResult, TrainSpec, train
from .workflow import NodeSpec, RunResult, Workflow, WorkflowSpec

try:
    __version__ = version("ift-engine")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "AnswerForm",
    "AnswerParser",
    "GenerationSettings",
    "IftError",
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
