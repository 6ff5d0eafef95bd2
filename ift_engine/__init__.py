"""ift_engine: instruction fine-tuning and composed tasks on fine-tuned models."""

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

__all__ = [
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
