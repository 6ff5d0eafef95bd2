"""``ift validate``, ``ift graph``, ``ift schema`` and ``ift plugins``: looking at files and
plugins without running anything."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..console import err, out
from ..errors import WorkflowError
from ..files import write_file


def add_parser(sub: Any) -> None:
    validate = sub.add_parser("validate", help="check a workflow without running it")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_validate)

    graph = sub.add_parser("graph", help="print a workflow's DAG as Mermaid text")
    graph.add_argument("file")
    graph.add_argument("--png", metavar="PATH", help="also draw it as a picture")
    graph.add_argument("--overwrite", action="store_true", help="replace an existing picture")
    graph.set_defaults(func=cmd_graph)

    schema = sub.add_parser("schema", help="print the JSON Schema of workflow (or --train) files")
    schema.add_argument("--train", action="store_true", help="the training file format instead")
    schema.set_defaults(func=cmd_schema)

    plugins = sub.add_parser("plugins", help="list plugins, their versions and hooks")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)


#: Keys only a training file has: a document with one of them (and no nodes) is checked as one.
TRAINING_KEYS = {"base_model", "datasets", "output", "training"}


def cmd_validate(args: argparse.Namespace) -> int:
    from ..documents import load_yaml_file
    from ..engine import Engine

    engine = Engine()
    document = load_yaml_file(Path(args.file), "workflow or training file", WorkflowError)
    if isinstance(document, dict) and "nodes" not in document and TRAINING_KEYS & document.keys():
        from ..training.examples import collect_examples
        from ..training.trainer import build_spec

        examples, held = collect_examples(build_spec(args.file), engine.components)
        out.print(f"{args.file}: ok (training file: {len(examples)} examples to train, {len(held)} held out)")
        return 0
    wf = engine.workflow(args.file)
    order = wf.graph.order()
    shown = " -> ".join(order[:12]) + (f" -> ... ({len(order) - 12} more)" if len(order) > 12 else "")
    out.print(f"{args.file}: ok ({len(order)} nodes, order: {shown})")
    for name, read_as in wf.graph.model_names().items():
        out.print(f"  model {name}: {read_as}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from ..engine import Engine

    wf = Engine().workflow(args.file)
    if args.png:
        from ..workflow.picture import check_picture_path, draw_graph

        check_picture_path(Path(args.png), args.overwrite)
    print(wf.mermaid(), end="")
    if args.png:
        write_file(args.png, lambda staging: draw_graph(wf.graph, staging), "picture", args.overwrite)
        err.print(f"picture written to {args.png}", style="dim")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from ..training import TrainSpec
    from ..workflow import WorkflowSpec

    print(json.dumps((TrainSpec if args.train else WorkflowSpec).model_json_schema(), indent=2))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from ..plugins import Components, build_plugin_manager, describe_plugins

    pm = build_plugin_manager()
    Components.from_plugin_manager(pm)  # collect registrations so a broken hook is reported here too
    rows = describe_plugins(pm)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        head = f"[bold]{escape(row['name'])}[/] {escape(row['distribution'])} {escape(row['version'])}"
        if "error" in row:
            out.print(f"{head}: [bold red]failed to load[/]: {escape(row['error'])}")
        else:
            out.print(f"{head}: {', '.join(row['hooks'])}")
    return 0
