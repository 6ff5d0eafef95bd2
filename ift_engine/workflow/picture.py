"""Draw a workflow DAG as a PNG (matplotlib, laid out in dependency layers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import networkx as nx

from ..files import OutputError, check_output_file
from .drawing import drawn_edges, node_lines
from .graph import WorkflowGraph


def picture_formats() -> dict[str, str]:
    """File suffixes matplotlib can write (``png``, ``svg``, ``pdf``...) and their names."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return FigureCanvasAgg(Figure()).get_supported_filetypes()


def check_picture_path(path: Path, overwrite: bool = False) -> None:
    """Refuse a picture path whose suffix names no format matplotlib writes, or that cannot be a file."""
    formats = picture_formats()
    if path.suffix.lower().lstrip(".") not in formats:
        raise OutputError(
            f"{path}: unknown picture format '{path.suffix or '(none)'}'; use one of "
            f"{', '.join('.' + f for f in sorted(formats))}"
        )
    check_output_file(path, "picture", overwrite)


def draw_graph(workflow: WorkflowGraph, path: str | Path | BinaryIO, format: str | None = None) -> None:
    """Draw the DAG into ``path`` (a file, whose suffix names the format, or a binary stream
    with ``format``: ``svg``, ``png``...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graph = nx.DiGraph()
    for name in workflow.spec.inputs:
        graph.add_node(f"${name}", kind="input")
    for node_id in workflow.order():
        graph.add_node(node_id, kind="node", label="\n".join(node_lines(workflow, node_id)))
    edges = drawn_edges(workflow)
    graph.add_edges_from((source, target) for source, target, _, back in edges if not back)
    for name, node_id in workflow.outputs().items():
        graph.add_node(f"{name} →", kind="output")
        graph.add_edge(node_id, f"{name} →")
    for layer, nodes in enumerate(nx.topological_generations(graph)):
        for node in nodes:
            graph.nodes[node]["layer"] = layer
    positions = nx.multipartite_layout(graph, subset_key="layer", align="horizontal", scale=-1)
    colours = {"input": "#cfe8ff", "node": "#ffe7b3", "output": "#d4f5d0"}
    height = 1.6 * (max(nx.get_node_attributes(graph, "layer").values()) + 1)
    layers: dict[int, int] = {}
    for layer in nx.get_node_attributes(graph, "layer").values():
        layers[layer] = layers.get(layer, 0) + 1
    width = max(6.0, 2.4 * max(layers.values()))  # as wide as the widest layer, not the node count
    fig, ax = plt.subplots(figsize=(width, height + 1))
    nx.draw_networkx_edges(graph, positions, ax=ax, arrows=True, arrowsize=14, node_size=3000)
    draw_edge_notes(ax, positions, edges)
    for node, (x, y) in positions.items():
        data = graph.nodes[node]
        ax.text(
            x,
            y,
            data.get("label", node),
            ha="center",
            va="center",
            fontsize=11,
            parse_math=False,  # names are drawn as written: "$x$" is no formula
            gid=f"dag-{node}",  # the page marks the running node by this SVG id
            bbox={"boxstyle": "round,pad=0.4", "fc": colours[data["kind"]], "ec": "#555"},
        )
    ax.set_title(workflow.spec.name, parse_math=False)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format=format)
    plt.close(fig)


def draw_edge_notes(ax: Any, positions: dict[str, Any], edges: list[tuple[str, str, str, bool]]) -> None:
    """Each condition on its edge, nearer the node it decides (edges from one source part
    there); a loop's edge back as a dashed arc, noted at its middle."""
    for source, target, note, back in edges:
        if not note:
            continue
        (x0, y0), (x1, y1) = positions[source], positions[target]
        if back:
            ax.annotate(
                "",
                xy=(x1, y1),
                xytext=(x0, y0),
                arrowprops={"arrowstyle": "->", "linestyle": "dashed", "connectionstyle": "arc3,rad=0.5"},
            )
        along = 0.5 if back else 0.65
        ax.text(
            x0 + along * (x1 - x0),
            y0 + along * (y1 - y0),
            note,
            ha="center",
            va="center",
            fontsize=9,
            style="italic",
            parse_math=False,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
        )
