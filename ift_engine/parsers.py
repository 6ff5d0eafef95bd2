"""Answer parsers turn a model's text answer into a node output (text, label, lines, JSON)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ParseError
from .structured import regex_constraint, schema_errors
from .templates import InstructionTemplate

#: The JSON Schema of what a parser returns for a template, or None where it cannot say.
OutputSchema = Callable[[InstructionTemplate], "dict[str, Any] | None"]


@dataclass(frozen=True)
class AnswerParser:
    """A named function ``parse(answer, template) -> output``; raises ``ParseError`` on failure.
    ``output`` says what it returns (a JSON Schema, for a template): the edges from a node are
    checked against it when a workflow loads. Without it, the output's type is unknown and is
    checked when it runs."""

    name: str
    parse: Callable[[str, InstructionTemplate], Any]
    description: str = ""
    output: OutputSchema | None = None


def parse_text(answer: str, template: InstructionTemplate) -> str:
    """The answer, stripped; it must match the template's ``regex`` where it has one."""
    text = answer.strip()
    if template.regex is not None and not regex_constraint(template.regex).accepts(text):
        raise ParseError(f"answer {text[:60]!r} does not match the regex {template.regex!r}")
    return text


def text_output(template: InstructionTemplate) -> dict[str, Any]:
    return {"type": "string"}


def find_label(answer: str, labels: Sequence[str]) -> int | None:
    """Index of the label that occurs first in ``answer`` (case-insensitive), or None."""
    lowered = answer.lower()
    found = [(lowered.find(label.lower()), i) for i, label in enumerate(labels)]
    found = [(position, i) for position, i in found if position >= 0]
    return min(found)[1] if found else None


def parse_label(answer: str, template: InstructionTemplate) -> str:
    """The label that occurs first in the answer."""
    index = find_label(answer, template.labels)
    if index is None:
        raise ParseError(f"answer {answer.strip()[:60]!r} names none of the labels {list(template.labels)}")
    return template.labels[index]


def label_output(template: InstructionTemplate) -> dict[str, Any]:
    return {"type": "string", "enum": list(template.labels)} if template.labels else {"type": "string"}


_BULLET = re.compile(r"^\s*(?:[-*•·]+|\d+[.)、]|[一二三四五六七八九十]+、|#+)\s*")


def parse_lines(answer: str, template: InstructionTemplate) -> list[str]:
    """Non-empty lines with bullets and numbering removed."""
    lines = [_BULLET.sub("", line).strip() for line in answer.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ParseError("answer has no non-empty lines")
    if template.items is not None and len(lines) != template.items:
        raise ParseError(f"answer has {len(lines)} lines, not the {template.items} asked for")
    return lines


def lines_output(template: InstructionTemplate) -> dict[str, Any]:
    count = template.items
    bounds = {"minItems": count, "maxItems": count} if count is not None else {"minItems": 1}
    return {"type": "array", "items": {"type": "string"}, **bounds}


def parse_json(answer: str, template: InstructionTemplate) -> Any:
    """The first JSON object or array in the answer (code fences and chatter around it
    allowed); with a ``schema``, the whole answer may be any JSON value (constrained answers
    are), and the value must validate against the schema."""
    if template.schema is None:
        return first_json(answer)
    try:
        value = json.loads(answer)
    except (ValueError, RecursionError):
        value = first_json(answer)
    problem = schema_errors(value, template.schema)
    if problem is not None:
        raise ParseError(f"the answer does not match the schema {problem}")
    return value


def json_output(template: InstructionTemplate) -> dict[str, Any] | None:
    """The template's schema (``true``: any JSON value); None without one: the first JSON object
    or array in a free answer, of a shape nothing declares."""
    schema = template.schema
    return {} if schema is True else schema


def first_json(answer: str) -> Any:
    """The first JSON object or array in ``answer``."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", answer):
        try:
            value, _ = decoder.raw_decode(answer, match.start())
        except json.JSONDecodeError:
            continue
        return value
    raise ParseError(f"answer {answer.strip()[:60]!r} contains no JSON object or array")
