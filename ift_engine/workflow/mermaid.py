"""A workflow as Mermaid flowchart text (``ift graph``, the service's ``mermaid`` field)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .drawing import drawn_edges, node_lines
from .graph import WorkflowGraph


def mermaid(workflow: WorkflowGraph) -> str:
    """A Mermaid flowchart of the workflow: inputs, nodes (template, model), outputs. Vertex
    names are prefixed and made safe (a node called ``end`` is a Mermaid keyword); labels show
    the names as written."""
    inputs = mermaid_ids("in", workflow.spec.inputs)
    nodes = mermaid_ids("n", workflow.order())
    outputs = mermaid_ids("out", workflow.outputs())
    lines = ["flowchart TD"]
    for name, vertex in inputs.items():
        lines.append(f'    {vertex}[/"{mermaid_text(name)}"/]')
    for node_id, vertex in nodes.items():
        name, template, model, *notes = (mermaid_text(line) for line in node_lines(workflow, node_id))
        label = "<br/>".join([name, f"{template} · {model}", *notes])
        lines.append(f'    {vertex}["{label}"]')
    vertices = {**nodes, **{f"${name}": vertex for name, vertex in inputs.items()}}
    for source, target, note, back in drawn_edges(workflow):
        arrow = "-.->" if back else "-->"
        shown = f'|"{mermaid_text(note)}"|' if note else ""
        lines.append(f"    {vertices[source]} {arrow}{shown} {nodes[target]}")
    for name, node_id in workflow.outputs().items():
        lines.append(f'    {nodes[node_id]} --> {outputs[name]}[\\"{mermaid_text(name)}"\\]')
    return "\n".join(lines) + "\n"


def mermaid_ids(prefix: str, names: Iterable[str]) -> dict[str, str]:
    """A unique Mermaid vertex name per name: the prefix, then the name's letters and digits."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        vertex = f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"
        while vertex in used:
            vertex += "_"
        used.add(vertex)
        ids[name] = vertex
    return ids


def mermaid_text(text: str) -> str:
    """Text for inside a quoted Mermaid label: quotes, angle brackets and # as entity codes."""
    return "".join(f"#{ord(c)};" if c in '"<>&#' else c for c in str(text))
