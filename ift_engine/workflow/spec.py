"""The workflow file format, as pydantic models (``extra="forbid"`` everywhere).

A value in a node's ``inputs`` is a reference or a literal: ``$input.NAME`` reads a workflow
input, ``NODE.output`` reads another node's output, ``$self.output`` and ``$self.iteration`` a
repeated node's previous output and run number, anything else is used as written. The forms
``{from: REF, default: V}`` and ``{first_of: [REF, ...], default: V}`` say what a node reads
when a node it refers to was skipped; either may declare the input's ``type:`` (one of the
workflow input types), which the edges into it are checked against when the file loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic._internal._model_construction import ModelMetaclass  # pydantic has no public name for it
from pydantic.fields import FieldInfo

from ..errors import WorkflowError
from ..models.base import GenerationSettings
from ..models.resolve import EnsembleSpec, ModelSpec
from ..structured import MAX_LINES
from ..templates import AnswerForm, TemplateSpec
from ..validation import first_problem
from .decisions import Condition, RepeatSpec, check_condition_size

ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
#: Upper bounds of a node's ``retry`` waits and ``timeout`` (seconds): an hour, a day.
MAX_WAIT = 3600.0
MAX_TIMEOUT = 86400.0
#: Nodes a workflow may have: far more than any composed task, and few enough that validating
#: the largest file takes about a second.
MAX_NODES = 10_000
# \Z, not $: "$input.x\n" (a literal followed by a newline) is no reference.
INPUT_REF = re.compile(r"\$input\.([A-Za-z_][A-Za-z0-9_]*)\Z")
NODE_REF = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)\.output\Z")
SELF_REF = re.compile(r"\$self\.(output|iteration)\Z")
#: Seeds and indices: what NumPy and native code take (a seed of 2**70 overflows them).
MAX_SEED = 2**32 - 1


# Node- and workflow-level generation settings: the same fields, all optional, merged over the
# defaults (one definition of the fields, in GenerationSettings).
def _optional(field: FieldInfo) -> Any:
    """A field's type made optional, its bounds (``field.metadata``) kept: a bad value is a
    field error when the file loads."""
    annotation: Any = field.annotation
    if field.metadata:
        annotation = Annotated.__class_getitem__((annotation, *field.metadata))  # type: ignore[attr-defined]
    return annotation | None


_overrides: dict[str, Any] = {
    name: (_optional(field), Field(None, description=field.description))
    for name, field in GenerationSettings.model_fields.items()
}
GenerationOverrides = create_model(
    "GenerationOverrides", __config__=ConfigDict(extra="forbid", allow_inf_nan=False), **_overrides
)


def reference(value: Any) -> tuple[str, str] | None:
    """``("input", name)``, ``("node", id)`` or ``("self", "output" | "iteration")`` when
    ``value`` is a reference, else None."""
    if not isinstance(value, str):
        return None
    if match := INPUT_REF.match(value):
        return ("input", match.group(1))
    if match := SELF_REF.match(value):
        return ("self", match.group(1))
    if match := NODE_REF.match(value):
        return ("node", match.group(1))
    return None


InputType = Literal["string", "number", "integer", "boolean", "list", "object"]
PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "list": (list, tuple),
    "object": (dict,),
}


def is_of_type(value: Any, name: str) -> bool:
    """Whether ``value`` is of the input type ``name`` (``true`` is no number; null is of none)."""
    if isinstance(value, bool) and name in ("number", "integer"):
        return False
    return isinstance(value, PYTHON_TYPES[name])


#: How each kind of reference is written.
REF_TEXT = {"input": "$input.{}", "node": "{}.output", "self": "$self.{}"}


def ref_text(ref: tuple[str, str]) -> str:
    """A reference as a workflow file writes it: ``$input.topic``, ``outline.output``."""
    return REF_TEXT[ref[0]].format(ref[1])


@dataclass(frozen=True)
class InputSource:
    """Where a node input's value comes from: the first of ``refs`` that has one (a skipped
    node has none, nor has ``$self.output`` on a first run), else ``default`` when
    ``has_default``. A literal is a source without refs whose default is the literal. ``type``:
    the type the input declares (``type:``), checked when the file loads."""

    refs: tuple[tuple[str, str], ...]
    default: Any = None
    has_default: bool = False
    type: InputType | None = None


INPUT_FORM_KEYS = ("from", "first_of", "default", "type")


def input_source(value: Any) -> InputSource:
    """How a node input is written (see the module docstring); ``ValueError`` saying what is
    wrong with a malformed ``from``/``first_of`` form. Any other mapping is a literal."""
    if not (isinstance(value, dict) and ("from" in value or "first_of" in value)):
        ref = reference(value)
        return InputSource((ref,)) if ref else InputSource((), value, True)
    extra = [key for key in value if key not in INPUT_FORM_KEYS]
    if extra:
        raise ValueError(
            f"unknown key {extra[0]!r}: this form takes 'from' or 'first_of', and 'default' and 'type'"
        )
    if "from" in value and "first_of" in value:
        raise ValueError("give one of 'from' (one reference) or 'first_of' (a list of them)")
    written = [value["from"]] if "from" in value else value["first_of"]
    if not isinstance(written, list) or not written:
        raise ValueError("'first_of' takes a list of references, e.g. [apology.output, thanks.output]")
    refs = []
    for item in written:
        ref = reference(item)
        if ref is None:
            raise ValueError(f"{item!r} is no reference: write NODE.output, $input.NAME or $self.output")
        refs.append(ref)
    declared: Any = value.get("type")
    if declared is not None and not (isinstance(declared, str) and declared in PYTHON_TYPES):
        raise ValueError(f"type {declared!r} is not one of {', '.join(PYTHON_TYPES)}")
    return InputSource(
        tuple(refs), value.get("default"), "default" in value, cast("InputType | None", declared)
    )


class _Explaining(ModelMetaclass):
    """Pydantic's model metaclass, whose ``Model(...)`` (a call from Python, which validation
    inside pydantic never makes) turns a bad field into the engine's one-line error."""

    def __call__(cls, *args: Any, **data: Any) -> Any:
        try:
            return super().__call__(*args, **data)
        except ValidationError as exc:
            problem = first_problem(exc, cast(type[BaseModel], cls), data)
            raise WorkflowError(f"{cls.__name__}: {problem}") from None


class SpecModel(BaseModel, metaclass=_Explaining):
    """A part of a workflow spec. Built in Python, a bad field is the engine's one-line error
    naming it (and the nearest known field), as it is in a workflow file."""


class InputSpec(SpecModel):
    """A workflow input. It is required unless it has a ``default``."""

    model_config = ConfigDict(extra="forbid")

    type: InputType = "string"
    description: str = ""
    default: Any = None

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set

    def accepts(self, value: Any) -> bool:
        return is_of_type(value, self.type)

    @model_validator(mode="after")
    def _default_of_its_type(self) -> InputSpec:
        if not self.required and self.default is not None and not self.accepts(self.default):
            raise ValueError(f"default {self.default!r} is not of type {self.type}")
        return self


ModelName = Annotated[str, Field(min_length=1)]
ModelRef = ModelName | ModelSpec | EnsembleSpec


class RetrySpec(SpecModel):
    """How often a failed model call is tried again, waiting ``backoff * factor**k`` seconds
    before the k-th retry."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    attempts: StrictInt = Field(1, ge=1, le=100, description="tries in all, the first included")
    backoff: float = Field(1.0, ge=0.0, le=MAX_WAIT, description="seconds before the first retry")
    factor: float = Field(2.0, ge=1.0, le=10.0, description="each later wait is this many times longer")

    def wait(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0 for the first), never more than ``MAX_WAIT``."""
        return min(self.backoff * self.factor**retry, MAX_WAIT)


class NodeSpec(SpecModel):
    """One subtask: render a template (or inline instruction), call a model, parse the answer."""

    model_config = ConfigDict(extra="forbid", serialize_by_alias=True)

    id: str = Field(pattern=ID_PATTERN)
    template: str | None = Field(None, description="a registered template name")
    instruction: str | None = Field(None, description="an inline one-paraphrase instruction")
    answer: AnswerForm | None = Field(None, description="answer form of an inline instruction")
    labels: list[str] | None = Field(None, description="label set of an inline label answer")
    answer_schema: dict[str, Any] | bool | str | None = Field(
        None,
        alias="schema",
        description="answer: json: a JSON Schema, inline or a .json file next to the workflow",
    )
    regex: str | None = Field(None, description="answer: text: a regex the whole answer matches")
    items: StrictInt | None = Field(None, ge=1, le=MAX_LINES, description="answer: lines: how many")
    paraphrase: StrictInt | None = Field(None, ge=0, le=MAX_SEED, description="paraphrase index (default 0)")
    paraphrase_seed: StrictInt | None = Field(
        None, ge=0, le=MAX_SEED, description="pick the paraphrase at random"
    )
    inputs: dict[str, Any] = Field(default_factory=dict)
    model: ModelRef | None = Field(
        None,
        description="a name under `models:` or `ensembles:`, a model spec, or an ensemble spec",
    )
    backend: str | None = Field(None, description="run this node's model on another backend")
    parser: str | None = Field(None, description="answer parser (default: the answer form's)")
    generation: GenerationOverrides = Field(default_factory=GenerationOverrides)  # type: ignore[valid-type]
    map: str | None = Field(
        None,
        description="fan out: run once per element of this input (a list), the output being the "
        "list of answers in order",
    )
    retry: RetrySpec = Field(default_factory=RetrySpec)
    timeout: float | None = Field(
        None, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False, description="seconds one model call may take"
    )
    cache: bool = Field(True, description="reuse answers from the on-disk cache")
    when: Condition | None = Field(
        None, description="run only when this holds; otherwise the node is skipped (its output is null)"
    )
    repeat: RepeatSpec | None = Field(
        None, description="run again, reading $self.output, until a condition holds or max runs are done"
    )

    @field_validator("when", mode="before")
    @classmethod
    def _bounded_condition(cls, value: Any) -> Any:
        return check_condition_size(value)

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, value: list[str] | None) -> list[str] | None:
        repeated = [label for i, label in enumerate(value or []) if label in (value or [])[:i]]
        if repeated:
            raise ValueError(f"the label {repeated[0]!r} is given twice; each label once")
        return value

    @model_validator(mode="after")
    def _one_instruction(self) -> NodeSpec:
        if (self.template is None) == (self.instruction is None):
            raise ValueError("give exactly one of 'template' or 'instruction'")
        narrowed = (self.answer, self.labels, self.answer_schema, self.regex, self.items)
        if self.template is not None and any(value is not None for value in narrowed):
            raise ValueError(
                "'answer', 'labels', 'schema', 'regex' and 'items' belong to inline instructions; "
                "a template has its own"
            )
        if self.map is not None and self.map not in self.inputs:
            raise ValueError(f"map: '{self.map}' is not one of this node's inputs ({', '.join(self.inputs)})")
        return self


class WorkflowSpec(SpecModel):
    """A whole workflow file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the workflow's name (no / or \\, not . or ..)")
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(default_factory=dict, description="named models")
    ensembles: dict[str, EnsembleSpec] = Field(default_factory=dict, description="named ensembles")
    model: ModelRef | None = Field(None, description="the model of nodes that name none")
    templates: list[TemplateSpec] = Field(
        default_factory=list, description="templates declared here, used like registered ones"
    )
    backend: str | None = Field(
        None, description="run every model on this backend (e.g. onnx) unless a node says otherwise"
    )
    generation: GenerationOverrides = Field(default_factory=GenerationOverrides)  # type: ignore[valid-type]
    nodes: list[NodeSpec] = Field(min_length=1)
    outputs: dict[str, str] = Field(
        default_factory=dict, description="name -> NODE.output; default: every sink node"
    )
    plugins: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="plugin name -> its settings (validated by the plugin)"
    )

    @field_validator("name")
    @classmethod
    def _name_is_one_path_part(cls, value: str) -> str:
        # The service lists and addresses workflows by name, as one part of a URL path.
        if "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError(f"{value!r}: a name has no / or \\ and is not . or ..; rename it")
        return value

    @field_validator("nodes", mode="before")
    @classmethod
    def _bounded_nodes(cls, value: Any) -> Any:
        # Before any node is validated: a huge file fails in milliseconds.
        if isinstance(value, list) and len(value) > MAX_NODES:
            raise ValueError(
                f"{len(value):,} nodes; a workflow has at most {MAX_NODES:,}: split it into several "
                "workflows, or use map: for one step over many items"
            )
        return value

    @field_validator("inputs", mode="before")
    @classmethod
    def _shorthand_inputs(cls, value: Any) -> Any:
        # `topic: string` is short for `topic: {type: string}`; `topic:` for `topic: {}`.
        if isinstance(value, dict):
            return {
                k: {"type": v} if isinstance(v, str) else ({} if v is None else v) for k, v in value.items()
            }
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _shorthand_models(cls, value: Any) -> Any:
        # `writer: smollm2-135m-instruct` is short for `writer: {name: smollm2-135m-instruct}`.
        if isinstance(value, dict):
            return {k: {"name": v} if isinstance(v, str) else v for k, v in value.items()}
        return value
