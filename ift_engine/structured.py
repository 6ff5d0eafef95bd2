"""Structured answers: what decoding is limited to, checked before any model runs, and the
checks of a parsed answer.

A ``Constraint`` is a grammar for llguidance (the library onnxruntime-genai, vLLM and outlines
use): a JSON Schema, a regex, or a set of labels. Backends that decode step by step keep one
matcher per row and mask every token the grammar does not allow (``models/guidance.py``), so
the answer always parses.

Everything a user gives is bounded before it is compiled (size, depth, llguidance's own parser
limits), so a hostile schema or regex is refused in milliseconds. Regexes run on llguidance's
automata (no backtracking), never on Python's ``re``. Fields a schema leaves unbounded get
bounds for decoding only (``bounded``): a small model can write digits until its token limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from .documents import check_depth
from .errors import ConstraintError
from .templates import AnswerForm, InstructionTemplate

MAX_SCHEMA_BYTES = 64 * 1024
MAX_REGEX_CHARS = 4096
MAX_LINES = 100
#: Bounds for decoding where a schema gives none (the answer is still validated against the
#: schema as written).
DEFAULT_MAX_LENGTH = 256
DEFAULT_MAX_ITEMS = 64
DEFAULT_INTEGER_BOUND = 10**15
MAX_LINE_CHARS = 300
#: JSON as ``json.dumps`` writes it (what models saw most): flexible whitespace would let a
#: model pad an answer with newlines for ever.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
#: Keys whose values are data, not subschemas: they are never given default bounds.
DATA_KEYS = frozenset({"enum", "const", "default", "examples"})
OPEN_OBJECT_KEYS = frozenset({"additionalProperties", "patternProperties", "unevaluatedProperties"})

ConstraintKind = Literal["json_schema", "regex", "choice"]


@dataclass(frozen=True)
class Constraint:
    """What an answer is limited to: ``kind`` and its text (the JSON Schema used for decoding,
    as JSON; a regex; or the labels as a JSON list)."""

    kind: ConstraintKind
    text: str

    def grammar(self) -> str:
        """The llguidance grammar of this constraint."""
        from llguidance import LLMatcher, grammar_from

        if self.kind == "json_schema":
            return LLMatcher.grammar_from_json_schema(self.text, defaults=JSON_OPTIONS)  # type: ignore[arg-type]
        return grammar_from(self.kind, self.text)

    def key(self) -> str:
        """What identifies the constraint (cohorts, the answer cache)."""
        return f"{self.kind}:{self.text}"

    def accepts(self, text: str) -> bool:
        """Whether ``text`` is a complete answer under this constraint."""
        from llguidance import LLMatcher

        matcher = LLMatcher(_byte_tokenizer(), self.grammar(), log_level=0)
        return matcher.consume_tokens(list(text.encode("utf-8"))) and matcher.is_accepting()


class _Bytes:
    """A tokenizer of one token per byte (and an end token): llguidance then checks text."""

    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b"<end>"]
    special_token_ids = [256]

    def __call__(self, data: bytes) -> list[int]:
        return list(data)


@lru_cache(maxsize=1)
def _byte_tokenizer() -> Any:
    from llguidance import LLTokenizer, TokenizerWrapper

    return LLTokenizer(TokenizerWrapper(_Bytes()))


def _checked(constraint: Constraint) -> Constraint:
    """``constraint``, once llguidance compiled it within its limits; else a one-line error."""
    from llguidance import LLMatcher

    try:
        message = LLMatcher.validate_grammar(constraint.grammar())
    except ValueError as exc:  # llguidance's own reading of the text
        message = str(exc)
    if message:
        first = re.sub(r"^at \d+\(\d+\): ", "", message.strip().splitlines()[0])
        raise ConstraintError(f"constrained decoding cannot use it: {first}")
    return constraint


def json_constraint(schema: Any) -> Constraint:
    """A JSON Schema (a mapping, or ``true``), checked: its size and depth, the JSON Schema
    meta-schema, and what llguidance can decode."""
    from jsonschema import SchemaError, validators

    if schema is False:
        raise ConstraintError("the schema false allows no answer at all; give a JSON Schema object")
    if not isinstance(schema, (dict, bool)):
        raise ConstraintError(f"a schema is a JSON Schema object, not {type(schema).__name__}")
    schema = {} if schema is True else schema  # true: any JSON value
    check_depth(schema, "the schema", ConstraintError)
    written = json.dumps(schema, ensure_ascii=False)
    if len(written.encode()) > MAX_SCHEMA_BYTES:  # before anything walks or compiles it
        raise ConstraintError(f"the schema is larger than {MAX_SCHEMA_BYTES // 1024} KiB; simplify it")
    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(map(str, exc.path)) or "the top level"
        raise ConstraintError(f"not a valid JSON Schema at {where}: {exc.message}") from None
    # Keys keep their order: llguidance writes properties in the order the schema lists them.
    decoding = json.dumps(bounded(schema), ensure_ascii=False)
    return _checked(Constraint("json_schema", decoding))


def bounded(schema: Any) -> Any:
    """``schema`` with default bounds on strings, integers and arrays that have none, and
    objects that list their properties closed to others."""
    if isinstance(schema, list):
        return [bounded(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v if k in DATA_KEYS else bounded(v) for k, v in schema.items()}
    types = out.get("type")
    types = types if isinstance(types, list) else [types]
    if "string" in types and not {"maxLength", "enum", "const", "pattern", "format"} & out.keys():
        out["maxLength"] = DEFAULT_MAX_LENGTH
    if "integer" in types and not {"enum", "const"} & out.keys():
        if not {"minimum", "exclusiveMinimum"} & out.keys():
            out["minimum"] = -DEFAULT_INTEGER_BOUND
        if not {"maximum", "exclusiveMaximum"} & out.keys():
            out["maximum"] = DEFAULT_INTEGER_BOUND
    if "array" in types and "maxItems" not in out:
        out["maxItems"] = DEFAULT_MAX_ITEMS
    if "properties" in out and not OPEN_OBJECT_KEYS & out.keys():
        out["additionalProperties"] = False  # else a model may invent keys of any length
    return out


@lru_cache(maxsize=256)
def regex_constraint(pattern: str) -> Constraint:
    """A regex the whole answer must match (Rust ``regex`` syntax, as llguidance reads it)."""
    if len(pattern) > MAX_REGEX_CHARS:
        raise ConstraintError(f"the regex is longer than {MAX_REGEX_CHARS:,} characters; simplify it")
    return _checked(Constraint("regex", pattern))


def choice_constraint(labels: Sequence[str]) -> Constraint:
    """An answer that is exactly one of ``labels``."""
    return _checked(Constraint("choice", json.dumps(list(labels), ensure_ascii=False)))


def lines_constraint(items: int) -> Constraint:
    """Exactly ``items`` non-blank lines of at most ``MAX_LINE_CHARS`` characters."""
    if not 1 <= items <= MAX_LINES:
        raise ConstraintError(f"items must be from 1 to {MAX_LINES}, not {items}")
    line = rf"[^\S\n]*\S[^\n]{{0,{MAX_LINE_CHARS - 1}}}"
    return regex_constraint(rf"(?:{line}\n){{{items - 1}}}{line}")


def schema_errors(value: Any, schema: Any) -> str | None:
    """Why ``value`` does not validate against ``schema``, or None when it does."""
    error = next(iter(_validator(json.dumps(schema, ensure_ascii=False)).iter_errors(value)), None)
    if error is None:
        return None
    where = "/".join(map(str, error.absolute_path)) or "the top level"
    return f"at {where}: {error.message[:200]}"


@lru_cache(maxsize=64)
def _validator(schema_text: str) -> Any:
    """A validator whose ``pattern`` runs on llguidance's automata (no regex backtracking)."""
    from jsonschema import ValidationError, validators

    schema = json.loads(schema_text)
    base = validators.validator_for(schema)

    def pattern(validator: Any, regex: str, instance: Any, schema: Any) -> Any:
        # As llguidance reads a pattern when decoding: the string, written as JSON, under it.
        string = Constraint("json_schema", json.dumps({"type": "string", "pattern": regex}))
        if isinstance(instance, str) and not string.accepts(json.dumps(instance, ensure_ascii=False)):
            yield ValidationError(f"{instance[:60]!r} does not match {regex!r}")

    return validators.extend(base, {"pattern": pattern})(schema)


def answer_constraint(template: InstructionTemplate) -> Constraint | None:
    """What decoding is limited to for a template's answers: its schema, labels, line count or
    regex; None for free text (and JSON without a schema)."""
    if template.answer is AnswerForm.JSON and template.schema is not None:
        return json_constraint(template.schema)
    if template.answer is AnswerForm.LABEL:
        return choice_constraint(template.labels)
    if template.answer is AnswerForm.LINES and template.items is not None:
        return lines_constraint(template.items)
    if template.regex is not None:
        return regex_constraint(template.regex)
    return None
