"""Typed edges, checked when a workflow loads.

Every value a node input reads must fit the type the input declares (``type:``; a ``map`` input
is a list), the branches of a ``first_of`` agree in type, and defaults fit. Every condition
reads a path its subject's schema allows and compares it with values it can have (a label
node's labels). Types are JSON Schemas (``value_types.py``): a value of unknown type passes here
and is checked when it runs. A skipped node's null never reaches a typed input: the reader is
skipped too, or reads its ``first_of`` or ``default``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..structured import bounded
from .bound import BoundNode, ErrorAt
from .decisions import Comparison, comparisons
from .spec import InputSource, InputSpec, is_of_type, ref_text
from .value_types import (
    NAMED_SCHEMAS,
    can_be,
    describe,
    describe_kinds,
    fits,
    follow,
    kind_of,
    kinds,
    written,
)

#: What a map input needs, said where it gets something else.
MAP_NEEDS = "map: runs the node once per element of a list (answer: lines, or json with an array schema)"
ITERATION_SCHEMA = {"type": "integer", "minimum": 1}


def check_types(nodes: Mapping[str, BoundNode], inputs: Mapping[str, InputSpec], error: ErrorAt) -> None:
    """Every node's inputs and conditions, checked against the types of what they read."""
    EdgeTypes(nodes, inputs, error).check()


class EdgeTypes:
    """The checks of one workflow's bound nodes, each raising ``error`` at its node and field."""

    def __init__(self, nodes: Mapping[str, BoundNode], inputs: Mapping[str, InputSpec], error: ErrorAt):
        self.nodes, self.inputs, self.error = nodes, inputs, error
        self._decoded: dict[str, Any] = {}  # node -> its output schema as decoding bounds it

    def check(self) -> None:
        for bound in self.nodes.values():
            for variable, source in bound.sources.items():
                self._input(bound, variable, source)
            spec = bound.spec
            until = spec.repeat.until if spec.repeat else None
            for field, condition in (("when", spec.when), ("repeat.until", until)):
                for test in comparisons(condition) if condition is not None else ():
                    self._comparison(spec.id, field, test)

    def schema_of(self, ref: tuple[str, str], node_id: str) -> Any:
        """The schema of what a reference reads (None: unknown)."""
        kind, name = ref
        if kind == "input":
            return NAMED_SCHEMAS[self.inputs[name].type]
        if kind == "node":
            return self.nodes[name].output
        return self.nodes[node_id].output if name == "output" else ITERATION_SCHEMA

    def _input(self, bound: BoundNode, variable: str, source: InputSource) -> None:
        node_id, wanted = bound.spec.id, bound.input_type(variable)
        field = "map" if variable == bound.spec.map else f"inputs.{variable}"
        if source.type is not None and source.type != wanted:
            raise self.error(
                f"input '{variable}' declares type {source.type}, but map: runs the node once per "
                "element of it, a list",
                node_id,
                f"inputs.{variable}",
            )
        branches = [(ref_text(ref), self.schema_of(ref, node_id)) for ref in source.refs]
        if wanted is None:
            self._agree(branches, source, node_id, field)
            return
        needs = MAP_NEEDS if field == "map" else f"the input declares type {wanted}"
        for text, schema in branches:
            if not fits(kinds(schema), wanted):
                raise self.error(f"{text} is {describe(schema)}, but {needs}", node_id, field)
        if source.has_default and not is_of_type(source.default, wanted):
            what = "default" if source.refs else "the value"
            raise self.error(
                f"{what} {written(source.default)} is {_kind(source.default)}, but {needs}", node_id, field
            )

    def _agree(self, branches: list[tuple[str, Any]], source: InputSource, node_id: str, field: str) -> None:
        """An untyped input: its branches (and default) must be of one type where they say."""
        known = [(text, schema) for text, schema in branches if kinds(schema) is not None]
        if not known:
            return
        first, schema = known[0]
        for other, other_schema in known[1:]:
            if kinds(other_schema) != kinds(schema):
                raise self.error(
                    f"first_of reads {first}, which is {describe(schema)}, and {other}, which is "
                    f"{describe(other_schema)}; the branches of a join agree in type (or declare a "
                    "type: that fits both)",
                    node_id,
                    field,
                )
        default = source.default
        if source.has_default and default is not None and kind_of(default) not in (kinds(schema) or ()):
            raise self.error(
                f"default {written(default)} is {_kind(default)}, but {first} is {describe(schema)}; "
                "give a default of its type",
                node_id,
                field,
            )

    def _comparison(self, node_id: str, field: str, test: Comparison) -> None:
        """The path a comparison reads, and the values it compares with, against the schema of
        its subject."""
        if test.node is not None:
            subject, schema = f"{test.node}.output", self._decoding(test.node)
        else:
            subject, schema = f"$input.{test.input}", NAMED_SCHEMAS[self.inputs[test.input or ""].type]
        if test.path is not None:
            try:
                schema = follow(schema, test.path)
            except ValueError as exc:
                raise self.error(f"{subject}, path '{test.path}': {exc}", node_id, field) from None
            subject += f" at path '{test.path}'"
        for value in (test.equals, *(test.in_ or ()), test.is_):
            if value is not None and not can_be(value, schema):
                raise self.error(
                    f"{subject} is {describe(schema)}, so it is never {written(value)}", node_id, field
                )

    def _decoding(self, node_id: str) -> Any:
        """A node's output schema as decoding bounds it (objects that list their properties
        have no others), worked out once per node."""
        if node_id not in self._decoded:
            self._decoded[node_id] = bounded(self.nodes[node_id].output)
        return self._decoded[node_id]


def _kind(value: Any) -> str:
    return "null (no value)" if value is None else describe_kinds([kind_of(value)])
