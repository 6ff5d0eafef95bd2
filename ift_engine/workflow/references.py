"""The names a node refers to, checked: where each input reads from (workflow inputs, nodes,
its own previous run) and the inputs and nodes its conditions read."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from .bound import ErrorAt
from .decisions import comparisons
from .spec import InputSource, InputSpec, NodeSpec, input_source


def _declared(inputs: Mapping[str, InputSpec]) -> str:
    return f"(declared: {', '.join(inputs) or 'none'})"


def _known(ids: Collection[str]) -> str:
    return f"(nodes: {', '.join(sorted(ids)[:20])})"


def node_sources(
    node: NodeSpec, inputs: Mapping[str, InputSpec], ids: Collection[str], error: ErrorAt
) -> dict[str, InputSource]:
    """Where each of the node's inputs comes from, every reference checked."""
    sources = {}
    for variable, value in node.inputs.items():
        field = f"inputs.{variable}"
        try:
            source = input_source(value)
        except ValueError as exc:
            raise error(str(exc), node.id, field) from None
        for kind, name in source.refs:
            if kind == "input" and name not in inputs:
                raise error(
                    f"$input.{name} is not a declared workflow input {_declared(inputs)}", node.id, field
                )
            if kind == "node" and name not in ids:
                raise error(f"{name}.output refers to unknown node '{name}' {_known(ids)}", node.id, field)
            if kind == "self" and node.repeat is None:
                raise error(
                    f"$self.{name} reads this node's previous run: give the node 'repeat:'", node.id, field
                )
        if source.refs == (("self", "output"),) and not source.has_default:
            raise error(
                "$self.output has no value on the first run: give a default "
                "({from: $self.output, default: ''}) or write {first_of: [$self.output, NODE.output]}",
                node.id,
                field,
            )
        sources[variable] = source
    return sources


def condition_nodes(
    node: NodeSpec,
    condition: Any,
    field: str,
    inputs: Mapping[str, InputSpec],
    ids: Collection[str],
    error: ErrorAt,
) -> list[str]:
    """The nodes a condition reads (the node itself left out), every name checked."""
    nodes = []
    for test in comparisons(condition) if condition is not None else ():
        if test.input is not None and test.input not in inputs:
            raise error(
                f"input '{test.input}' is not a declared workflow input {_declared(inputs)}", node.id, field
            )
        if test.node is None:
            continue
        if test.node not in ids:
            raise error(f"unknown node '{test.node}' {_known(ids)}", node.id, field)
        if test.node == node.id:
            if field == "when":
                raise error(
                    "a node's condition cannot read its own output, which does not exist yet; "
                    "test it after each run with repeat.until",
                    node.id,
                    field,
                )
            continue
        nodes.append(test.node)
    return nodes
