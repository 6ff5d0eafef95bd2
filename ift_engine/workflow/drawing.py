"""What a drawing of a workflow shows besides its names: notes on nodes (fan-out, loops) and the
edges with the conditions they carry. Shared by the Mermaid text and the picture."""

from __future__ import annotations

from .decisions import comparisons, describe
from .graph import WorkflowGraph


def node_notes(workflow: WorkflowGraph, node_id: str) -> list[str]:
    """Lines a drawing writes under a node's names: its fan-out and its loop."""
    spec = workflow.node(node_id).spec
    notes = [f"map over {spec.map}"] if spec.map else []
    if spec.repeat is not None:
        until = f" until {describe(spec.repeat.until)}" if spec.repeat.until is not None else ""
        notes.append(f"repeat up to {spec.repeat.max}×{until}")
    return notes


def drawn_edges(workflow: WorkflowGraph) -> list[tuple[str, str, str, bool]]:
    """The edges a drawing shows, as (source, target, note, back): a source is a node id or
    ``$NAME`` for a workflow input. An edge whose source a condition reads carries that
    condition (``when ...``, ``until ...``). A repeat whose until reads later nodes (a check of
    its answer) gets an edge back from each of them (``back``), noted with the loop."""
    edges = []
    for node_id in workflow.order():
        bound = workflow.node(node_id)
        spec = bound.spec
        sources = [f"${name}" for s in bound.sources.values() for kind, name in s.refs if kind == "input"]
        sources += list(workflow.graph.predecessors(node_id))
        notes: dict[str, list[str]] = {}
        for word, condition in (("when", spec.when), ("until", spec.repeat.until if spec.repeat else None)):
            for test in comparisons(condition) if condition is not None else ():
                source = test.node if test.node is not None else f"${test.input}"
                notes.setdefault(source, []).append(f"{word} {describe(condition)}")
                sources.append(source)
        checks = workflow.checks.get(node_id, set())
        for source in dict.fromkeys(sources):
            if source != node_id and source not in checks:
                edges.append((source, node_id, "; ".join(dict.fromkeys(notes.get(source, []))), False))
        edges += [(check, node_id, node_notes(workflow, node_id)[-1], True) for check in sorted(checks)]
    return edges


def node_lines(workflow: WorkflowGraph, node_id: str) -> list[str]:
    """What a drawn node says, line by line: its id, template and model, then its notes."""
    bound = workflow.node(node_id)
    return [node_id, bound.template.name, bound.model.name, *node_notes(workflow, node_id)]
