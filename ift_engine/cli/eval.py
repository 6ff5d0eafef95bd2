"""``ift eval``: accuracy across instruction paraphrases, from an evaluation file or flags."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..console import err, out
from ..errors import EvalError
from ..files import check_output_file, json_text, write_file

#: Flags that describe the evaluation itself: given with a file, they would be ignored.
SIMPLE_FLAGS = {"data": "--data", "source": "--source", "template": "--template", "model": "--model"}


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "eval", help="score models on a labelled dataset under every paraphrase of a template"
    )
    parser.add_argument("file", nargs="?", help="evaluation YAML file (or give --data, --template, --model)")
    simple = parser.add_argument_group("without a file")
    simple.add_argument("--data", metavar="FILE", help="records: .jsonl, .json or .csv")
    simple.add_argument("--source", metavar="NAME", help="a registered dataset source instead of --data")
    simple.add_argument("--template", metavar="NAME", help="the template whose paraphrases are asked")
    simple.add_argument(
        "--model", action="append", default=[], metavar="M", help="a model to evaluate (repeat to compare)"
    )
    simple.add_argument("--held-out", metavar="FILE", help="YAML list of more paraphrases to ask with")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N records (shuffled first)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    parser.add_argument("--report", metavar="FILE.md", help="write a markdown report")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the score per paraphrase and model")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --report/--plot files")
    parser.set_defaults(func=cmd_eval)


def spec_from_flags(args: argparse.Namespace) -> dict[str, Any] | str:
    """The evaluation file's path, or an evaluation built from the flags."""
    given = [flag for name, flag in SIMPLE_FLAGS.items() if getattr(args, name)]
    if args.file is not None:
        if given or args.held_out:
            flags = ", ".join(given or ["--held-out"])
            raise EvalError(f"{flags}: set these in {args.file}, or leave the file out")
        return args.file
    needed = (("template", "--template"), ("model", "--model"))
    missing = [flag for name, flag in needed if not getattr(args, name)]
    if not (args.data or args.source):
        missing.insert(0, "--data (or --source)")
    if missing:
        raise EvalError(f"ift eval needs an evaluation file, or {', '.join(missing)}")
    data: dict[str, Any] = {"path": args.data} if args.data else {"source": args.source}
    spec: dict[str, Any] = {"data": data, "template": args.template, "models": args.model}
    if args.held_out:
        spec["held_out"] = args.held_out
    return spec


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any model work, outputs that could not be written."""
    if args.report:
        check_output_file(Path(args.report), "report", args.overwrite)
    if args.plot:
        from ..workflow.picture import check_picture_path

        check_picture_path(Path(args.plot), args.overwrite)


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..engine import Engine
    from ..evaluation.report import draw_plot, markdown_report, notes, terminal_table

    spec = spec_from_flags(args)
    if args.limit is not None and args.limit < 1:
        raise EvalError(f"--limit must be at least 1, not {args.limit}")
    check_outputs(args)
    bar: list[Any] = []

    def start(total: int) -> None:
        bar.append(tqdm(total=total, unit="prompt", desc="ift eval", dynamic_ncols=True, delay=1.0))

    try:
        with Engine() as engine:
            evaluation = engine.evaluate(
                spec, on_progress=lambda n: bar[0].update(n), on_start=start, limit=args.limit
            )
    finally:
        for b in bar:
            b.close()
    if args.plot:
        write_file(args.plot, lambda staging: draw_plot(evaluation, staging), "plot", args.overwrite)
    if args.report:
        plot = os.path.relpath(args.plot, Path(args.report).parent) if args.plot else None
        write_file(args.report, markdown_report(evaluation, plot), "report", args.overwrite)
    if args.json:
        print(json_text(evaluation.to_json(), indent=2))
        return 0
    out.print(terminal_table(evaluation))
    for line in notes(evaluation):
        out.print(escape(line))
    for path, what in ((args.report, "report"), (args.plot, "plot")):
        if path:
            err.print(f"{what} written to {path}", style="dim")
    return 0
