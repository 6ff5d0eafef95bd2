"""``ift templates [NAME] [--json]``: the registered instruction templates, or one in full."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape
from rich.table import Column, Table

from ..console import out
from ..templates import InstructionTemplate


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "templates", help="list instruction templates: variables, answer form, labels, paraphrases"
    )
    parser.add_argument("name", nargs="?", help="show this template's paraphrases in full")
    parser.add_argument("--json", action="store_true", help="print them as JSON")
    parser.set_defaults(func=cmd_templates)


def described(template: InstructionTemplate, plugin: str) -> dict[str, Any]:
    return {**template.describe(), "plugin": plugin}


def cmd_templates(args: argparse.Namespace) -> int:
    from ..engine import Engine

    registry = Engine().components.templates
    if args.name is not None:
        template = registry.get(args.name)  # an unknown name lists the known ones
        row = described(template, registry.plugin_of(args.name))
        if args.json:
            print(json.dumps(row, ensure_ascii=False, indent=2))
        else:
            show_one(row)
        return 0
    rows = [described(registry.get(name), registry.plugin_of(name)) for name in registry.names()]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    name = Column("name", no_wrap=True)
    table = Table(name, "task", "lang", "variables", "answer", "labels", "paraphrases")
    for row in rows:
        table.add_row(
            escape(row["name"]),
            escape(row["task"]),
            escape(row["language"]),
            escape(", ".join(row["variables"])),
            row["answer"],
            escape(", ".join(row["labels"])),
            str(len(row["paraphrases"])),
        )
    out.print(table)
    out.print("ift templates NAME shows one template's paraphrases", style="dim")
    return 0


def show_one(row: dict[str, Any]) -> None:
    labels = f" ({', '.join(row['labels'])})" if row["labels"] else ""
    head = f"task {escape(row['task'])}, language {escape(row['language'])}"
    out.print(f"[bold]{escape(row['name'])}[/]: {head}")
    out.print(f"variables: {escape(', '.join(row['variables']) or 'none')}")
    out.print(f"answer: {row['answer']}{escape(labels)}")
    out.print(f"from: {escape(row['plugin'])}")
    if row["system"]:
        out.print(f"system: {escape(row['system'])}")
    for index, text in enumerate(row["paraphrases"]):
        out.rule(f"paraphrase {index}", align="left")
        out.print(escape(text))
