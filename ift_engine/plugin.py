"""The plugin author's API: everything a third-party plugin imports, from one module.

    from ift_engine.plugin import Model, Register, hookimpl

    class Shout(Model):
        backend = "shout"
        capabilities = frozenset({"generate"})
        ...

    @hookimpl
    def register_models(register: Register[type[Model]]) -> None:
        register(Shout)

Each hook receives a ``Register`` typed by what it takes (``hookspecs`` lists the hooks). The
names here are kept stable across releases; the engine's other modules may move.
"""

from __future__ import annotations

from .augment import Augmenter, Lexicon, RateOptions, editable, is_chinese, join_words, split_words
from .engine import Engine
from .ensemble import Combines, Ensembler, LabelEnsembler
from .errors import IftError, ModelError, ParseError, PluginError
from .hookspecs import Register, hookimpl
from .models.base import (
    CAPABILITIES,
    AnswersWithMembers,
    Capability,
    DecodesSteps,
    DecodingSteps,
    GenerationSettings,
    Message,
    Model,
    ModelAlias,
    NoOptions,
    Prompt,
    StreamingModel,
    StreamsText,
    TextSink,
    softmax,
)
from .models.chat import chat_ids, chat_segments, text_ids
from .models.decoding import BatchesContinuously, Cohort, Row, decode_to_end
from .models.embedded import smollm2_gguf as embedded_gguf
from .models.mock import MockModel
from .models.resolve import ModelPool
from .parsers import AnswerParser, find_label
from .plugins import Components, build_plugin_manager, components, installed_components
from .scores import chrf, rouge_l
from .settings import PluginSettings, current_settings
from .sources import DatasetSource, NoSourceOptions
from .templates import AnswerForm, InstructionTemplate

__all__ = [
    "CAPABILITIES",
    "AnswerForm",
    "AnswerParser",
    "AnswersWithMembers",
    "Augmenter",
    "BatchesContinuously",
    "Capability",
    "Cohort",
    "Combines",
    "Components",
    "DatasetSource",
    "DecodesSteps",
    "DecodingSteps",
    "Engine",
    "Ensembler",
    "GenerationSettings",
    "IftError",
    "InstructionTemplate",
    "LabelEnsembler",
    "Lexicon",
    "Message",
    "MockModel",
    "Model",
    "ModelAlias",
    "ModelError",
    "ModelPool",
    "NoOptions",
    "NoSourceOptions",
    "ParseError",
    "PluginError",
    "PluginSettings",
    "Prompt",
    "RateOptions",
    "Register",
    "Row",
    "StreamingModel",
    "StreamsText",
    "TextSink",
    "build_plugin_manager",
    "chat_ids",
    "chat_segments",
    "chrf",
    "components",
    "current_settings",
    "decode_to_end",
    "editable",
    "embedded_gguf",
    "find_label",
    "hookimpl",
    "installed_components",
    "is_chinese",
    "join_words",
    "rouge_l",
    "softmax",
    "split_words",
    "text_ids",
]
