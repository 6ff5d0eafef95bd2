"""Typed edges: what each answer form's output is, inputs that declare `type:`, `map:` over lists
only, joins whose branches agree, defaults that fit, and conditions whose paths and values the
schema of what they read allows. Every mismatch is a one-line error when the file loads."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_cli import ift
from test_hostile_input import assert_one_line_error  # the one definition of the promise

from ift_engine import Workflow, WorkflowError

WORKFLOWS = Path(__file__).parent.parent / "workflows"
RECORD_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "status": {"enum": ["active", "retired"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "additionalProperties": False,
        },
        "notes": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

#: One node of each answer form, and a node `use` that reads them (changed by each case).
BASE: dict[str, Any] = {
    "name": "typed",
    "inputs": {"topic": "string", "n": "integer", "x": "number", "items": "list", "meta": "object"},
    "model": {"name": "mock", "backend": "mock"},
    "nodes": [
        {"id": "draft", "instruction": "Write about {topic}", "inputs": {"topic": "$input.topic"}},
        {"id": "sentiment", "template": "sentiment-zh", "inputs": {"text": "$input.topic"}},
        {
            "id": "outline",
            "instruction": "Outline {topic}",
            "answer": "lines",
            "inputs": {"topic": "$input.topic"},
        },
        {
            "id": "three",
            "instruction": "Three points on {topic}",
            "answer": "lines",
            "items": 3,
            "inputs": {"topic": "$input.topic"},
        },
        {
            "id": "record",
            "instruction": "A record on {topic}",
            "answer": "json",
            "schema": RECORD_SCHEMA,
            "inputs": {"topic": "$input.topic"},
        },
        {
            "id": "names",
            "instruction": "Names in {topic}",
            "answer": "json",
            "schema": {"type": "array", "items": {"type": "string"}},
            "inputs": {"topic": "$input.topic"},
        },
        {
            "id": "maybe",
            "instruction": "Maybe a record on {topic}",
            "answer": "json",
            "schema": {"type": ["object", "null"]},
            "inputs": {"topic": "$input.topic"},
        },
        {
            "id": "free",
            "instruction": "Any JSON on {topic}",
            "answer": "json",
            "inputs": {"topic": "$input.topic"},
        },
        {
            "id": "section",
            "instruction": "Write {part}",
            "inputs": {"part": "outline.output"},
            "map": "part",
        },
        {
            "id": "listed",
            "instruction": "List {topic}",
            "parser": "lines",
            "inputs": {"topic": "$input.topic"},
        },
        {"id": "use", "instruction": "Use {v}", "inputs": {"v": "draft.output"}},
    ],
}
USE = len(BASE["nodes"]) - 1


def load(doc: dict[str, Any]) -> Workflow:
    return Workflow.from_yaml_text(
        yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), source="typed.yaml"
    )


def use(value: Any, **changes: Any) -> dict[str, Any]:
    """BASE with the node `use` reading ``value`` as its input ``v``."""
    doc = copy.deepcopy(BASE)
    doc["nodes"][USE].update({"inputs": {"v": value}, **changes})
    return doc


def condition(field: str, test: dict[str, Any]) -> dict[str, Any]:
    """BASE with ``test`` as the `when` (or `repeat.until`) of the node `use`."""
    if field == "when":
        return use("draft.output", when=test)
    return use({"from": "$self.output", "default": ""}, repeat={"max": 2, "until": test})


MISMATCHES = [
    (
        "map over a text answer",
        use("draft.output", map="v"),
        "'map': draft.output is a string, but map: runs",
    ),
    (
        "map over a label",
        use("sentiment.output", map="v"),
        '\'map\': sentiment.output is one of "正面", "负面"',
    ),
    ("map over a string input", use("$input.topic", map="v"), "'map': $input.topic is a string, but map:"),
    ("map over a literal", use("abc", map="v"), "'map': the value \"abc\" is a string, but map:"),
    (
        "map over an object schema",
        use("record.output", map="v"),
        "'map': record.output is an object, but map:",
    ),
    (
        "a label where a list is declared",
        use({"from": "sentiment.output", "type": "list"}),
        '\'inputs.v\': sentiment.output is one of "正面", "负面", but the input declares type list',
    ),
    (
        "an object schema where a list is declared",
        use({"from": "record.output", "type": "list"}),
        "'inputs.v': record.output is an object, but the input declares type list",
    ),
    (
        "a map node's list where a string is declared",
        use({"from": "section.output", "type": "string"}),
        "'inputs.v': section.output is a list, but the input declares type string",
    ),
    (
        "a schema that allows null where an object is declared",
        use({"from": "maybe.output", "type": "object"}),
        "'inputs.v': maybe.output is an object or null, but the input declares type object",
    ),
    (
        "a number where an integer is declared",
        use({"from": "$input.x", "type": "integer"}),
        "'inputs.v': $input.x is a number, but the input declares type integer",
    ),
    (
        "the iteration where a string is declared",
        use({"from": "$self.iteration", "type": "string"}, repeat={"max": 2}),
        "'inputs.v': $self.iteration is an integer, but the input declares type string",
    ),
    (
        "a map input declaring another type",
        use({"from": "outline.output", "type": "string"}, map="v"),
        "'inputs.v': input 'v' declares type string, but map: runs the node once per element of it",
    ),
    (
        "an unknown type name",
        use({"from": "outline.output", "type": "lst"}),
        "'inputs.v': type 'lst' is not one of",
    ),
    (
        "first_of branches of different types",
        use({"first_of": ["outline.output", "draft.output"]}),
        "'inputs.v': first_of reads outline.output, which is a list, and draft.output, which is a string",
    ),
    (
        "a declared type one branch does not fit",
        use({"first_of": ["outline.output", "draft.output"], "type": "list"}),
        "'inputs.v': draft.output is a string, but the input declares type list",
    ),
    (
        "a default that is not of the declared type",
        use({"from": "outline.output", "type": "list", "default": "none"}),
        "'inputs.v': default \"none\" is a string, but the input declares type list",
    ),
    (
        "a null default on a typed input",
        use({"from": "outline.output", "type": "list", "default": None}),
        "'inputs.v': default null is null (no value), but the input declares type list",
    ),
    (
        "a default of another type than its branch",
        use({"from": "outline.output", "default": "none"}),
        "'inputs.v': default \"none\" is a string, but outline.output is a list; give a default of its type",
    ),
    (
        "a default that does not fit map",
        use({"from": "outline.output", "default": "none"}, map="v"),
        "'map': default \"none\" is a string, but map:",
    ),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [case[1:] for case in MISMATCHES], ids=[c[0] for c in MISMATCHES]
)
def test_a_type_mismatch_is_a_one_line_error_naming_node_and_field(doc, expected):
    with pytest.raises(WorkflowError) as info:
        load(doc)
    message = str(info.value)
    assert message.startswith("typed.yaml: node 'use', field ") and expected in message, message
    assert "\n" not in message


COMPATIBLE = [
    ("map over lines", use("outline.output", map="v")),
    ("map over a json array", use("names.output", map="v")),
    ("map over a list input", use("$input.items", map="v")),
    ("map over a literal list", use(["a", "b"], map="v")),
    ("map over json without a schema", use("free.output", map="v")),
    ("map over text parsed as lines", use("listed.output", map="v")),
    ("an object where an object is declared", use({"from": "record.output", "type": "object"})),
    ("an object input", use({"from": "$input.meta", "type": "object"})),
    ("an integer where a number is declared", use({"from": "$input.n", "type": "number"})),
    ("a label where a string is declared", use({"from": "sentiment.output", "type": "string"})),
    ("a label and a text join", use({"first_of": ["sentiment.output", "draft.output"]})),
    ("a join of integer and number, typed", use({"first_of": ["$input.n", "$input.x"], "type": "number"})),
    ("lines and a json array join", use({"first_of": ["outline.output", "names.output"], "type": "list"})),
    ("a default of the declared type", use({"from": "outline.output", "type": "list", "default": []})),
    ("a default of the branch's type", use({"from": "draft.output", "default": "(none)"})),
    ("a null default, untyped", use({"from": "draft.output", "default": None})),
    ("any value to an untyped input", use("record.output")),
    ("the iteration as an integer", use({"from": "$self.iteration", "type": "integer"}, repeat={"max": 2})),
]


@pytest.mark.parametrize("doc", [case[1] for case in COMPATIBLE], ids=[c[0] for c in COMPATIBLE])
def test_compatible_typed_edges_load(doc):
    load(doc)


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_workflow_validates(path):
    Workflow.from_yaml(path)


def test_each_answer_form_has_its_type():
    graph = load(BASE).graph
    assert graph.node("draft").output == {"type": "string"}
    assert graph.node("sentiment").output == {"type": "string", "enum": ["正面", "负面"]}
    assert graph.node("outline").output == {"type": "array", "items": {"type": "string"}, "minItems": 1}
    assert graph.node("three").output == {
        "type": "array",
        "items": {"type": "string"},
        "minItems": 3,
        "maxItems": 3,
    }
    assert graph.node("record").output == RECORD_SCHEMA
    assert graph.node("free").output is None  # any JSON: checked when it runs
    assert graph.node("section").output == {"type": "array", "items": {"type": "string"}}
    assert graph.node("listed").output == graph.node("outline").output  # the parser's type


def test_a_value_of_unknown_type_is_checked_when_it_runs():
    free, reader = copy.deepcopy(BASE["nodes"][7]), {"id": "use", "instruction": "Use {v}"}
    reader["inputs"] = {"v": {"from": "free.output", "type": "list"}}
    doc = {
        "name": "unknown",
        "inputs": {"topic": "string"},
        "model": {"name": "mock", "backend": "mock", "options": {"default": '{"a": 1}'}},
        "nodes": [free, reader],
    }
    [result] = load(doc).run_many([{"topic": "t"}])
    assert result.error is not None and result.error.node == "use"
    assert "input 'v' must be of type list, not dict" in result.error.message


# -- conditions --------------------------------------------------------------------------------

PATH_ERRORS = [
    (
        {"node": "record", "path": "nmae", "is": None},
        "record.output, path 'nmae': the value has no property 'nmae' (its properties: name, age, status",
    ),
    (
        {"node": "record", "path": "address.town", "is": None},
        "path 'address.town': 'address' has no property 'town' (its properties: city)",
    ),
    (
        {"node": "record", "path": "age.years", "equals": 3},
        "path 'age.years': 'age' is an integer: a path reads into a mapping or a list",
    ),
    ({"node": "draft", "path": "title", "is": None}, "draft.output, path 'title': the value is a string"),
    (
        {"node": "sentiment", "path": "0", "equals": "x"},
        'sentiment.output, path \'0\': the value is one of "正面", "负面": a path reads into',
    ),
    (
        {"node": "outline", "path": "first", "is": None},
        "outline.output, path 'first': the value is a list: index it with a number, not 'first'",
    ),
    (
        {"node": "three", "path": "3", "is": None},
        "three.output, path '3': the value is a list of at most 3 items: it has no item 3",
    ),
    (
        {"node": "record", "path": "tags.x", "is": None},
        "path 'tags.x': 'tags' is a list: index it with a number, not 'x'",
    ),
    ({"input": "topic", "path": "a", "is": None}, "$input.topic, path 'a': the value is a string"),
]


@pytest.mark.parametrize("field", ["when", "repeat.until"])
@pytest.mark.parametrize(("test", "expected"), PATH_ERRORS, ids=[c[0].get("path") for c in PATH_ERRORS])
def test_a_path_the_schema_rules_out_is_a_one_line_error(field, test, expected):
    with pytest.raises(WorkflowError) as info:
        load(condition(field, test))
    message = str(info.value)
    assert message.startswith(f"typed.yaml: node 'use', field '{field}': ") and expected in message, message
    assert "\n" not in message


VALUE_ERRORS = [
    (
        {"node": "sentiment", "equals": "负 面"},
        'sentiment.output is one of "正面", "负面", so it is never "负 面"',
    ),
    (
        {"node": "sentiment", "in": ["正面", "好"]},
        'sentiment.output is one of "正面", "负面", so it is never "好"',
    ),
    ({"node": "sentiment", "is": True}, "so it is never true"),
    (
        {"node": "record", "path": "status", "equals": "activ"},
        'record.output at path \'status\' is one of "active", "retired", so it is never "activ"',
    ),
    (
        {"node": "record", "path": "age", "equals": "34"},
        "record.output at path 'age' is an integer, so it is never \"34\"",
    ),
    ({"input": "n", "in": [1, "two"]}, '$input.n is an integer, so it is never "two"'),
]


@pytest.mark.parametrize(("test", "expected"), VALUE_ERRORS)
def test_comparing_with_a_value_the_subject_never_has_is_a_one_line_error(test, expected):
    with pytest.raises(WorkflowError) as info:
        load(condition("when", test))
    message = str(info.value)
    assert message.startswith("typed.yaml: node 'use', field 'when': ") and expected in message, message


@pytest.mark.parametrize(
    "test",
    [
        {"node": "sentiment", "equals": "负面"},
        {"node": "sentiment", "in": ["正面", "负面"]},
        {"node": "sentiment", "is": None},  # skipped
        {"node": "record", "path": "address.city", "equals": "Seville"},
        {"node": "record", "path": "tags.0", "equals": "x"},
        {"node": "record", "path": "notes.anything", "equals": "x"},  # additionalProperties: a schema
        {"node": "record", "path": "age", "in": [30, 31.0]},
        {"node": "record", "path": "status", "equals": "active"},
        {"node": "three", "path": "2", "equals": "x"},
        {"node": "free", "path": "any.thing.3", "equals": 1},  # no schema: unchecked
        {"node": "section", "path": "0", "equals": "x"},
        {"node": "maybe", "path": "x", "equals": 1},  # an object of any properties
        {"input": "meta", "path": "a.b", "equals": 1},
        {"input": "x", "equals": 2},  # an integer is a number
    ],
)
def test_conditions_the_schemas_allow_load(test):
    load(condition("when", test))
    load(condition("repeat.until", test))


def test_paths_follow_anyof_refs_and_tuples_without_false_errors():
    schema = {
        "type": "object",
        "properties": {
            "either": {"anyOf": [{"type": "object"}, {"type": "string"}]},
            "ref": {"$ref": "#/$defs/thing"},
            "open": {"type": "object", "properties": {"a": {}}, "additionalProperties": True},
            "pair": {
                "type": "array",
                "prefixItems": [{"type": "string"}, {"type": "integer"}],
                "items": False,
            },
        },
        "$defs": {"thing": {"type": "object"}},
    }
    doc = copy.deepcopy(BASE)
    doc["nodes"][4]["schema"] = schema
    for test, fine in [
        ({"node": "record", "path": "either.key", "is": None}, True),
        ({"node": "record", "path": "ref.key", "is": None}, True),
        ({"node": "record", "path": "open.b", "is": None}, True),  # open as written: decoding keeps it so
        ({"node": "record", "path": "pair.1", "equals": 3}, True),
        ({"node": "record", "path": "pair.1", "equals": "3"}, False),
        ({"node": "record", "path": "pair.2", "is": None}, False),
    ]:
        doc["nodes"][USE]["when"] = test
        if fine:
            load(doc)
        else:
            with pytest.raises(WorkflowError, match="field 'when'"):
                load(doc)


def test_ift_validate_refuses_a_map_over_text_in_one_line(tmp_path):
    flow = tmp_path / "flow.yaml"
    flow.write_text(yaml.safe_dump(use("draft.output", map="v"), allow_unicode=True), encoding="utf-8")
    done = ift("validate", str(flow))
    assert_one_line_error(
        done.returncode, done.stderr, str(flow), "node 'use', field 'map'", "draft.output is a string"
    )
