"""Built-in answer parsers, one per answer form."""

from __future__ import annotations

from ..hookspecs import Register, hookimpl
from ..parsers import AnswerParser, parse_json, parse_label, parse_lines, parse_text


@hookimpl
def register_parsers(register: Register) -> None:
    register(AnswerParser("text", parse_text, "the answer, stripped"))
    register(AnswerParser("label", parse_label, "the template label named first in the answer"))
    register(AnswerParser("lines", parse_lines, "non-empty lines without bullets or numbering"))
    register(AnswerParser("json", parse_json, "the first JSON object or array in the answer"))
