"""The shape of a bound workflow's graph: that it is acyclic, and each repeated node's loop.

The graph is a ``networkx.DiGraph`` with one vertex per node id (attribute ``node``: its
``BoundNode``) and an edge ``a -> b`` when ``b`` reads ``a``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from .bound import BoundNode, ErrorAt
from .decisions import condition_nodes

#: Repeated nodes a workflow may have: finding each loop walks the graph once.
MAX_REPEATS = 100


@dataclass
class Loops:
    """Each repeated node's loop: ``repeats`` (head -> its members), ``repeat_of`` (member ->
    the head of its loop) and ``checks`` (head -> the later nodes its until reads, the ends of
    its loop)."""

    repeats: dict[str, frozenset[str]] = field(default_factory=dict)
    repeat_of: dict[str, str] = field(default_factory=dict)
    checks: dict[str, set[str]] = field(default_factory=dict)


def _bound(graph: nx.DiGraph, node_id: str) -> BoundNode:
    return graph.nodes[node_id]["node"]


def check_acyclic(graph: nx.DiGraph, error: ErrorAt) -> None:
    """Nothing, or an error printing the cycle (naming the condition that closes it, if one does)."""
    if nx.is_directed_acyclic_graph(graph):  # linear; find_cycle is not, on big graphs
        return
    cycle = nx.find_cycle(graph)
    path = " -> ".join([edge[0] for edge in cycle] + [cycle[0][0]])
    for source, target in cycle:
        spec = _bound(graph, target).spec
        until = spec.repeat.until if spec.repeat else None
        for name, condition in (("when", spec.when), ("repeat.until", until)):
            if source in condition_nodes(condition):
                raise error(
                    f"the condition reads node '{source}', which depends on this node (cycle: {path}); "
                    "a condition reads workflow inputs and earlier nodes",
                    target,
                    name,
                )
    raise error(f"the nodes form a cycle: {path}; a workflow must be acyclic")


def find_repeats(graph: nx.DiGraph, error: ErrorAt) -> Loops:
    """Each repeated node's loop. A node's ``until`` may read nodes that depend on it (a check
    of its answer): those nodes, and every node between, run again with it. Any other node the
    condition reads is an earlier one: an edge to the head is added for it."""
    loops = Loops()
    heads = [n for n, data in graph.nodes(data=True) if data["node"].spec.repeat is not None]
    if len(heads) > MAX_REPEATS:
        raise error(
            f"{len(heads):,} nodes repeat; a workflow has at most {MAX_REPEATS}: split it into several"
        )
    index = _positions(graph)
    for head in heads:
        repeat = _bound(graph, head).spec.repeat
        read = set(condition_nodes(repeat.until if repeat else None)) - {head}
        loops.checks[head] = read & _between(graph, head, read, index)
        graph.add_edges_from((n, head) for n in read - loops.checks[head])
    check_acyclic(graph, error)
    index = _positions(graph)
    for head in sorted(heads, key=index.__getitem__):
        members = _between(graph, head, loops.checks[head], index)
        for member in sorted(members - {head}, key=index.__getitem__):
            _join(graph, loops, head, member, error)
        loops.repeats[head] = frozenset(members)
        loops.repeat_of[head] = head
    return loops


def _join(graph: nx.DiGraph, loops: Loops, head: str, member: str, error: ErrorAt) -> None:
    """Make ``member`` one of the nodes of ``head``'s loop, if it can be."""
    if _bound(graph, member).spec.repeat is not None:
        raise error(
            f"this node runs inside the repeat of '{head}' (between it and the nodes its until "
            "reads), so it cannot repeat on its own; one loop at a time",
            member,
            "repeat",
        )
    if member in loops.repeat_of:
        raise error(
            f"this node runs inside the repeats of both '{loops.repeat_of[member]}' and '{head}'; "
            "a node belongs to one loop at most",
            member,
        )
    loops.repeat_of[member] = head


def _positions(graph: nx.DiGraph) -> dict[str, int]:
    return {node_id: i for i, node_id in enumerate(nx.topological_sort(graph))}


def _between(graph: nx.DiGraph, head: str, ends: set[str], index: dict[str, int]) -> set[str]:
    """``head``, ``ends`` and every node on a path between them. The search stays among the
    nodes that come after ``head`` in ``index`` (a topological order)."""
    reach = set()
    stack = list(ends)
    while stack:
        node_id = stack.pop()
        if node_id not in reach:
            reach.add(node_id)
            stack.extend(p for p in graph.predecessors(node_id) if index[p] > index[head])
    members, stack = {head}, [head]
    while stack:
        for successor in graph.successors(stack.pop()):
            if successor in reach and successor not in members:
                members.add(successor)
                stack.append(successor)
    return members
