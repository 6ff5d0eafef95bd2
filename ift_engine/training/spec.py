"""The training file format (``ift train train.yaml``), as pydantic models."""

from __future__ import annotations

import difflib
import enum
import functools
import operator
import re
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from ..paraphrases import ParaphraseChoice
from ..records import MAX_COUNT, MAX_SEED, RecordSource
from ..templates import TemplateSpec
from .data import Format

#: More passes over the data than anyone means (a typo such as 1e9 would run for ever).
MAX_EPOCHS = 1000
#: Augmented copies per record: more only repeats the same few edits, and multiplies memory.
MAX_COPIES = 100
#: TrainingArguments fields that ``training.args`` may not set, and why.
ENGINE_OWNED = {"output_dir": "checkpoints go in the run's own folder: set output"}


@functools.cache
def training_argument_types() -> dict[str, Any]:
    """The fields of the installed transformers' ``TrainingArguments`` and their types."""
    import dataclasses

    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(TrainingArguments)
        if f.init and not f.name.startswith("_")
    }


def as_written(annotation: Any) -> Any:
    """A field's type as a file writes it: an enum (alone, beside ``str``, or inside a list) is
    one of its values, since transformers turns the text into the enum and refuses any other."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return Literal[tuple(member.value for member in annotation)] | annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        has_enum = any(isinstance(a, type) and issubclass(a, enum.Enum) for a in args)
        return functools.reduce(operator.or_, [as_written(a) for a in args if not (has_enum and a is str)])
    if origin in (list, dict) and args:
        return origin[tuple(as_written(a) for a in args)]
    return annotation


@functools.cache
def argument_checker(name: str) -> TypeAdapter[Any]:
    """Strict: ``true`` is no number and ``"5"`` no integer (transformers would take both and
    fail at the first step, or train with the wrong value)."""
    config = ConfigDict(strict=True, arbitrary_types_allowed=True)
    return TypeAdapter(as_written(training_argument_types()[name]), config=config)


def type_name(annotation: Any) -> str:
    """``int | None``, ``SchedulerType | str``: a type as a user reads it."""
    if isinstance(annotation, type):
        return annotation.__name__
    return re.sub(r"\b(?:\w+\.)+(\w)", r"\1", str(annotation)).replace("NoneType", "None")


def check_training_argument(name: str, value: Any) -> None:
    """``ValueError`` naming the field, what it takes and what it got, for a value of the wrong
    type (or a choice transformers does not know) in ``training.args``."""
    try:
        argument_checker(name).validate_python(value)
    except ValidationError as exc:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ValueError(
            f"'{name}': {exc.errors()[0]['msg']}, not {shown} (TrainingArguments.{name} takes "
            f"{type_name(training_argument_types()[name])}); fix the value or remove the key"
        ) from None


class DatasetSpec(RecordSource):
    """One training dataset: its records, their format, and the template of task records."""

    format: Format | None = Field(None, description="default: detected from each record's fields")
    template: str | None = Field(None, description="template for 'task' records")
    paraphrases: list[Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]] | None = Field(
        None, min_length=1, description="template paraphrases to train on (default all)"
    )


class AugmentSpec(BaseModel):
    """``copies`` augmented copies of each training record, each passed through ``ops`` in
    order. An op is ``{type: NAME, ...options}`` (e.g. ``{type: random_swap, rate: 0.1}``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    copies: StrictInt = Field(0, ge=0, le=MAX_COPIES)
    ops: list[dict[str, Any]] = Field(default_factory=list)


class LoraSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    r: StrictInt = Field(8, ge=1, le=4096)
    alpha: StrictInt = Field(16, ge=1, le=MAX_COUNT)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    top_layers: StrictInt | None = Field(
        None,
        ge=1,
        le=MAX_COUNT,
        description="adapt only the last N decoder layers: backward stops there, so steps are cheaper",
    )
    merge: bool = Field(
        True,
        description="merge the adapter into the base (a full model folder); false: keep the adapter "
        "alone (a peft adapter folder that names its base), to serve beside other adapters on one base",
    )


class TrainingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: float = Field(1.0, gt=0, le=MAX_EPOCHS)
    learning_rate: float = Field(2e-4, gt=0, le=1.0)
    batch_size: StrictInt = Field(8, ge=1, le=65536)
    gradient_accumulation: StrictInt = Field(1, ge=1, le=65536)
    max_length: StrictInt = Field(256, ge=16, le=1_048_576)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lora: LoraSpec | None = Field(default_factory=LoraSpec, description="null: full fine-tuning")
    keep_adapter: bool = Field(False, description="also save the LoRA adapter beside the merged model")
    logging_steps: StrictInt = Field(5, ge=1, le=MAX_COUNT)
    eval_steps: StrictInt | None = Field(
        None, ge=1, le=MAX_COUNT, description="evaluate every N steps (default: per epoch)"
    )
    save_steps: StrictInt = Field(50, ge=1, le=MAX_COUNT)
    group_by_length: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="any transformers TrainingArguments field, over the engine's settings "
        "(report_to, bf16, gradient_checkpointing, lr_scheduler_type, warmup_steps, ...)",
    )

    @model_validator(mode="after")
    def _adapter_kept_once(self) -> TrainingSettings:
        if self.keep_adapter and self.lora is not None and not self.lora.merge:
            raise ValueError(
                "keep_adapter saves the adapter beside a merged model; with lora.merge: false "
                "the output is the adapter: remove keep_adapter"
            )
        return self

    @field_validator("args")
    @classmethod
    def _known_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        known = training_argument_types()
        for key, item in value.items():
            if key in ENGINE_OWNED:
                raise ValueError(f"'{key}' is set by the engine ({ENGINE_OWNED[key]})")
            if key not in known:
                near = difflib.get_close_matches(key, list(known), n=1)
                hint = f"; did you mean '{near[0]}'?" if near else ""
                raise ValueError(f"'{key}' is not a TrainingArguments field{hint}")
            check_training_argument(key, item)
        return value


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    split: float = Field(0.1, ge=0, description="a fraction (< 1) or a count of records held out")
    max_generate: StrictInt = Field(32, ge=0, le=MAX_COUNT, description="eval examples generated for ROUGE-L")
    paraphrases: ParaphraseChoice | None = Field(
        None,
        description="after training, run ift eval on the held-out records with these paraphrases of "
        "each task template (all: every one); the figures go in ift_model.json",
    )
    held_out: list[str] | str | None = Field(
        None, description="more paraphrases to evaluate with: a list, or a YAML file holding one"
    )

    @model_validator(mode="after")
    def _records_to_evaluate(self) -> EvalSpec:
        if self.paraphrases is not None and self.split == 0:
            raise ValueError("paraphrases: evaluating needs held-out records; set split above 0")
        if self.held_out is not None and self.paraphrases is None:
            raise ValueError("held_out: add paraphrases (e.g. all) to evaluate after training")
        return self

    @field_validator("split")
    @classmethod
    def _fraction_or_count(cls, value: float) -> float:
        if value >= 1 and value != int(value):
            raise ValueError(
                "a split of 1 or more is a count of records: give a whole number, or a fraction below 1"
            )
        return value


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    base_model: str = Field(min_length=1, description="alias, model folder, .gguf file or hub id")
    output: str = Field(min_length=1, description="folder for the fine-tuned model")
    datasets: list[DatasetSpec] = Field(min_length=1)
    templates: list[TemplateSpec] = Field(
        default_factory=list, description="templates declared here, used like registered ones"
    )
    template_policy: Literal["round-robin", "random"] = "round-robin"
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    seed: StrictInt = Field(0, ge=0, le=MAX_SEED)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
