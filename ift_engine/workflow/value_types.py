"""The types of the values on a workflow's edges, written as JSON Schemas: what a node answers
(its parser's ``output``), what a workflow input holds, what a node input declares.

A schema that gives no ``type``, ``enum`` or ``const`` (a JSON answer without a schema, a
parser that does not say) is of unknown type: edges from it are checked when they run.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from .decisions import same

Schema = dict[str, Any]

#: The JSON types of values; "number" stands for numbers that may not be integers.
JSON_TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")
#: The schema of each type a workflow input (or a node input's ``type:``) can be.
NAMED_SCHEMAS: dict[str, Schema] = {
    "string": {"type": "string"},
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "list": {"type": "array"},
    "object": {"type": "object"},
}
WORDS = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "array": "a list",
    "object": "an object",
    "null": "null",
}
#: Enum values shown in a message at most.
SHOWN_VALUES = 20


def kinds(schema: Any) -> frozenset[str] | None:
    """The JSON types a value under ``schema`` may have; None where the schema does not say."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return frozenset({kind_of(schema["const"])})
    if isinstance(schema.get("enum"), list):
        return frozenset(kind_of(value) for value in schema["enum"])
    declared = schema.get("type")
    if isinstance(declared, (str, list)):
        found = {t for t in ([declared] if isinstance(declared, str) else declared) if t in JSON_TYPES}
        return frozenset(found | ({"integer"} if "number" in found else set()))
    branches = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(branches, list) and branches:
        each = [kinds(branch) for branch in branches]
        return None if None in each else frozenset().union(*each)  # type: ignore[arg-type]
    return None


def kind_of(value: Any) -> str:
    """The JSON type of a value (a float with an integral value is an integer, as JSON has it)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "boolean", False: "boolean"}[value]
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    for name, types in (("integer", int), ("string", str), ("array", (list, tuple)), ("object", dict)):
        if isinstance(value, types):
            return name
    return type(value).__name__


def fits(found: frozenset[str] | None, named: str) -> bool:
    """Whether every value of types ``found`` (None: unknown, checked when it runs) is of the
    named type."""
    return found is None or found <= (kinds(NAMED_SCHEMAS[named]) or frozenset())


def can_be(value: Any, schema: Any) -> bool:
    """Whether a value under ``schema`` can equal ``value``."""
    found = kinds(schema)
    if found is not None and kind_of(value) not in found:
        return False
    enum = schema.get("enum") if isinstance(schema, dict) else None
    return not isinstance(enum, list) or any(same(value, option) for option in enum)


def describe(schema: Any) -> str:
    """A schema's type in words: ``a string``, ``a list``, ``one of 正面, 负面``."""
    enum = schema.get("enum") if isinstance(schema, dict) else None
    if isinstance(enum, list) and enum:
        more = ", ..." if len(enum) > SHOWN_VALUES else ""
        return "one of " + ", ".join(written(value) for value in enum[:SHOWN_VALUES]) + more
    return describe_kinds(kinds(schema))


def describe_kinds(found: Collection[str] | None) -> str:
    if found is None:
        return "of any type"
    found = set(found) - ({"integer"} if "number" in found else set())
    return " or ".join(WORDS.get(k, k) for k in JSON_TYPES if k in found) or "nothing"


def written(value: Any) -> str:
    """A value as JSON writes it (strings quoted: a label with a stray space shows it)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def mapped(schema: Schema | None) -> Schema:
    """The schema of a map node's output: the list of its answers."""
    return {"type": "array"} if schema is None else {"type": "array", "items": schema}


def follow(schema: Any, path: str) -> Any:
    """The schema of what ``path`` (keys and indices, dot-separated) reads in a value under
    ``schema``; None where the schema stops saying. ``ValueError`` when no such value has it:
    a key the schema's objects cannot have, a step into a value that is neither a mapping nor a
    list, an index past the lists' length."""
    parts = path.split(".")
    for depth, key in enumerate(parts):
        if not isinstance(schema, dict):
            return None
        schema = _step(schema, key, f"'{'.'.join(parts[:depth])}'" if depth else "the value")
    return schema


#: What a step reads where it cannot exist.
_NONE: Any = object()


def _step(schema: Schema, key: str, where: str) -> Any:
    found = kinds(schema)
    steps = []
    if found is None or "object" in found:
        steps.append(_property(schema, key))
    if found is None or "array" in found:
        steps.append(_element(schema, key))
    possible = [step for step in steps if step is not _NONE]
    if not possible:
        raise ValueError(_no_step(found, schema, key, where))
    return possible[0] if len(possible) == 1 else None


def _property(schema: Schema, key: str) -> Any:
    """The schema of property ``key``, None where unknown, ``_NONE`` where objects have none."""
    properties = schema.get("properties")
    if isinstance(properties, dict) and key in properties:
        return _NONE if properties[key] is False else properties[key]
    if "patternProperties" in schema or "unevaluatedProperties" in schema:
        return None
    extra = schema.get("additionalProperties", True)
    return _NONE if extra is False else extra if isinstance(extra, dict) else None


def _element(schema: Schema, key: str) -> Any:
    """The schema of element ``key``, None where unknown, ``_NONE`` where lists have none."""
    if not key.isdigit():
        return _NONE
    index, limit, items = int(key), schema.get("maxItems"), schema.get("items")
    if isinstance(limit, int) and index >= limit:
        return _NONE
    if isinstance(schema.get("prefixItems"), list):
        prefix, rest = schema["prefixItems"], items
    elif isinstance(items, list):
        prefix, rest = items, schema.get("additionalItems")
    else:
        prefix, rest = [], items
    if index < len(prefix):
        return prefix[index]
    return _NONE if rest is False else rest if isinstance(rest, dict) else None


def _no_step(found: frozenset[str] | None, schema: Schema, key: str, where: str) -> str:
    properties = schema.get("properties")
    if found is not None and not found & {"object", "array"}:
        return f"{where} is {describe(schema)}: a path reads into a mapping or a list"
    if found == {"array"}:
        if key.isdigit():
            limit = schema.get("maxItems")
            most = f" of at most {limit} items" if limit is not None else ""
            return f"{where} is a list{most}: it has no item {key}"
        return f"{where} is a list: index it with a number, not '{key}'"
    if isinstance(properties, dict):
        return f"{where} has no property '{key}' (its properties: {', '.join(properties) or 'none'})"
    return f"{where} has no property '{key}' (it takes none)"
