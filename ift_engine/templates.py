"""Instruction templates: several paraphrases of one task's instruction, rendered literally.

A paraphrase names its variables as ``{name}``; ``{{`` and ``}}`` stand for literal braces.
Rendering is one pass over the paraphrase text, so a value containing ``{x}``, ``{{ x }}`` or
``$x`` is inserted exactly as typed and never re-interpreted.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import TemplateError

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{|\}")

Message = dict[str, str]


class AnswerForm(str, Enum):
    """What a node expects the model to answer."""

    TEXT = "text"
    LABEL = "label"
    LINES = "lines"
    JSON = "json"


def placeholders(text: str) -> list[str]:
    """The variable names a paraphrase uses, in order of first use.

    A lone ``{`` or ``}`` (not doubled, not around a name) is an error: it is almost always a
    typo, and silently passing it through would hide it.
    """
    names: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            raise TemplateError(
                f"stray '{token}' at character {match.start()}: write '{token * 2}' for a "
                "literal brace or '{name}' for a variable"
            )
        if match.group(1) not in names:
            names.append(match.group(1))
    return names


def fill(text: str, values: Mapping[str, str]) -> str:
    """Replace ``{name}`` by ``values[name]`` in one pass; values are never re-scanned."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return values[match.group(1)]

    return _TOKEN.sub(replace, text)


def to_text(value: Any) -> str:
    """How an upstream output is written into a prompt: lists as lines, mappings as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return json.dumps(value, ensure_ascii=False)


def last_user_text(messages: Sequence[Message]) -> str:
    """The text of the last user message (what a sequence classifier reads)."""
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


@dataclass(frozen=True)
class RenderedPrompt:
    """Chat messages ready for a model, and which paraphrase produced them."""

    messages: tuple[Message, ...]
    paraphrase: int

    @property
    def user_text(self) -> str:
        return last_user_text(self.messages)


@dataclass(frozen=True)
class InstructionTemplate:
    """One task's instruction in several paraphrases (FLAN style).

    ``variables`` are the inputs every paraphrase must use; ``answer`` is the expected form of
    the model's answer and ``labels`` the fixed label set when ``answer`` is ``label``. The
    answer form may be narrowed: ``schema`` (a JSON Schema) for ``json``, ``items`` (how many
    lines) for ``lines``, ``regex`` (what the whole answer matches) for ``text``; decoding is
    then constrained to it (``structured.py``).
    Construction lints the template and raises ``TemplateError`` naming it and the paraphrase.
    """

    name: str
    task: str
    paraphrases: tuple[str, ...]
    variables: tuple[str, ...]
    language: str = "en"
    answer: AnswerForm = AnswerForm.TEXT
    labels: tuple[str, ...] = ()
    system: str | None = None
    schema: Any = field(default=None, hash=False)
    regex: str | None = None
    items: int | None = None

    def __post_init__(self) -> None:
        # Accept lists from YAML/JSON but store tuples so templates stay hashable and immutable.
        object.__setattr__(self, "paraphrases", tuple(self.paraphrases))
        object.__setattr__(self, "variables", tuple(self.variables))
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "answer", AnswerForm(self.answer))
        self._lint()

    def _lint(self) -> None:
        where = f"template '{self.name}'"
        if not self.paraphrases:
            raise TemplateError(f"{where}: needs at least one paraphrase")
        if self.answer is AnswerForm.LABEL and len(self.labels) < 2:
            raise TemplateError(f"{where}: a label answer needs at least two labels")
        if self.answer is not AnswerForm.LABEL and self.labels:
            raise TemplateError(f"{where}: labels are only allowed with answer 'label'")
        narrowing = (("schema", AnswerForm.JSON), ("regex", AnswerForm.TEXT), ("items", AnswerForm.LINES))
        for name, form in narrowing:
            if getattr(self, name) is not None and self.answer is not form:
                raise TemplateError(f"{where}: '{name}' is only allowed with answer '{form.value}'")
        declared = set(self.variables)
        for index, text in enumerate(self.paraphrases):
            try:
                used = placeholders(text)
            except TemplateError as exc:
                raise TemplateError(f"{where}, paraphrase {index}: {exc}") from None
            unknown = [name for name in used if name not in declared]
            if unknown:
                raise TemplateError(
                    f"{where}, paraphrase {index}: placeholder {{{unknown[0]}}} is never "
                    f"provided (variables: {', '.join(self.variables) or 'none'})"
                )
            unused = [name for name in self.variables if name not in used]
            if unused:
                raise TemplateError(
                    f"{where}, paraphrase {index}: variable '{unused[0]}' is provided but this "
                    "paraphrase never uses it"
                )

    def pick(self, paraphrase: int | None = None, seed: int | None = None) -> int:
        """The paraphrase index to use: the given one, a seeded random one, or 0."""
        if paraphrase is not None:
            if not 0 <= paraphrase < len(self.paraphrases):
                raise TemplateError(
                    f"template '{self.name}' has paraphrases 0..{len(self.paraphrases) - 1}, not {paraphrase}"
                )
            return paraphrase
        if seed is not None:
            return random.Random(seed).randrange(len(self.paraphrases))
        return 0

    def render(
        self,
        values: Mapping[str, Any],
        paraphrase: int | None = None,
        seed: int | None = None,
    ) -> RenderedPrompt:
        """Fill one paraphrase with ``values`` and return the chat messages."""
        missing = [name for name in self.variables if name not in values]
        if missing:
            raise TemplateError(f"template '{self.name}' needs variable '{missing[0]}'")
        index = self.pick(paraphrase, seed)
        text = fill(self.paraphrases[index], {k: to_text(values[k]) for k in self.variables})
        messages: list[Message] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": text})
        return RenderedPrompt(tuple(messages), index)

    def describe(self) -> dict[str, Any]:
        """What ``ift templates --json`` prints: every field, the answer form as its name."""
        return {
            "name": self.name,
            "task": self.task,
            "language": self.language,
            "answer": self.answer.value,
            "labels": list(self.labels),
            "variables": list(self.variables),
            "system": self.system,
            "paraphrases": list(self.paraphrases),
        }

    @classmethod
    def inline(
        cls,
        name: str,
        instruction: str,
        answer: AnswerForm | str = AnswerForm.TEXT,
        labels: Sequence[str] = (),
        **narrowed: Any,
    ) -> InstructionTemplate:
        """A one-paraphrase template written directly in a workflow node; ``narrowed``: its
        ``schema``, ``regex`` or ``items``."""
        try:
            variables = tuple(placeholders(instruction))
        except TemplateError as exc:
            raise TemplateError(f"template '{name}': {exc}") from None
        return cls(
            name=name,
            task=name,
            paraphrases=(instruction,),
            variables=variables,
            answer=AnswerForm(answer),
            labels=tuple(labels),
            **narrowed,
        )


class TemplateSpec(BaseModel):
    """A template declared in a workflow, training or eval file (``templates:``): the fields of
    ``InstructionTemplate``, with ``task`` defaulting to the name and ``variables`` to the
    placeholders of the first paraphrase. ``build`` lints it as a registered template is."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    task: str | None = Field(None, description="default: the name")
    language: str = "en"
    answer: AnswerForm = AnswerForm.TEXT
    labels: list[str] = Field(default_factory=list, description="the label set of a label answer")
    variables: list[str] | None = Field(None, description="default: the first paraphrase's placeholders")
    paraphrases: list[str] = Field(min_length=1)
    system: str | None = None

    def build(self) -> InstructionTemplate:
        variables = self.variables
        if variables is None:
            try:
                variables = placeholders(self.paraphrases[0])
            except TemplateError as exc:
                raise TemplateError(f"template '{self.name}', paraphrase 0: {exc}") from None
        return InstructionTemplate(
            name=self.name,
            task=self.task or self.name,
            paraphrases=tuple(self.paraphrases),
            variables=tuple(variables),
            language=self.language,
            answer=self.answer,
            labels=tuple(self.labels),
            system=self.system,
        )
