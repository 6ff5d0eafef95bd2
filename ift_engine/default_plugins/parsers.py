"""Built-in answer parsers, one per answer form."""

from __future__ import annotations

from ..hookspecs import Register, hookimpl
from ..parsers import (
    AnswerParser,
    json_output,
    label_output,
    lines_output,
    parse_json,
    parse_label,
    parse_lines,
    parse_text,
    text_output,
)


@hookimpl
def register_parsers(register: Register[AnswerParser]) -> None:
    register(AnswerParser("text", parse_text, "the answer, stripped", text_output))
    register(AnswerParser("label", parse_label, "the template label named first in the answer", label_output))
    register(AnswerParser("lines", parse_lines, "non-empty lines without bullets or numbering", lines_output))
    register(AnswerParser("json", parse_json, "the first JSON object or array in the answer", json_output))
