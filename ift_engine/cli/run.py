"""``ift run``: a workflow on one input, or on a JSONL file of inputs (a batch run)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..console import err, out
from ..documents import loads_json
from ..errors import NodeError, WorkflowError
from ..files import check_output_file, write_file


def add_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="run a workflow on one input, or on a JSONL file of inputs")
    run.add_argument("file", help="workflow YAML file")
    run.add_argument("--input", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--input-json", metavar="JSON", help="inputs as one JSON object")
    run.add_argument("--trace", metavar="PATH", help="write every node's output, prompt and timing")
    run.add_argument("--overwrite", action="store_true", help="replace an existing --trace file")
    run.add_argument("--json", action="store_true", help="print the outputs as JSON only")
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the answer cache")
    batch = run.add_argument_group("batch runs")
    batch.add_argument(
        "--inputs", metavar="FILE.jsonl", help="one JSON object of inputs per line ('-': standard input)"
    )
    batch.add_argument("--output", metavar="FILE.jsonl", help="one result row per input")
    batch.add_argument("--batch-size", type=int, default=8, help="inputs per model call (default 8)")
    batch.add_argument("--resume", action="store_true", help="skip the ids already in --output")
    batch.add_argument("--executor", choices=["local", "ray"], default="local")
    batch.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join (default: start one)")
    batch.add_argument("--workers", type=int, help="Ray workers (default: one per CPU)")
    run.set_defaults(func=cmd_run)


def _parse_inputs(pairs: Sequence[str], as_json: str | None, declared: dict[str, Any]) -> dict[str, Any]:
    """``--input NAME=VALUE`` pairs over ``--input-json``; non-string inputs are parsed as JSON."""
    inputs: dict[str, Any] = {}
    if as_json:
        try:
            loaded = loads_json(as_json)
        except json.JSONDecodeError as exc:
            raise WorkflowError(f"--input-json is not valid JSON: {exc.msg} at character {exc.pos}") from None
        except ValueError as exc:
            raise WorkflowError(f"--input-json: {exc}") from None
        except RecursionError:
            raise WorkflowError("--input-json is nested too deeply to read") from None
        if not isinstance(loaded, dict):
            raise WorkflowError('--input-json must be a JSON object such as \'{"topic": "bees"}\'')
        inputs.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise WorkflowError(f"--input {pair!r} must look like NAME=VALUE")
        spec = declared.get(key)
        if spec is not None and spec.type != "string":
            try:
                inputs[key] = loads_json(value)
            except (ValueError, RecursionError):
                raise WorkflowError(
                    f"--input {key}: type {spec.type} must be written as JSON, got {value!r}"
                ) from None
        else:
            inputs[key] = value
    return inputs


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(f"- {v}" for v in value)
    return json.dumps(value, ensure_ascii=False, indent=2)


def cmd_run(args: argparse.Namespace) -> int:
    from ..engine import Engine
    from ..workflow import RunResult

    wf = Engine().workflow(args.file)
    if args.inputs:
        single = [flag for flag, given in SINGLE_RUN_FLAGS.items() if getattr(args, given)]
        if single:
            raise WorkflowError(
                f"{', '.join(single)} belong to a run on one input; a batch run (--inputs) takes its inputs "
                "from the file and writes one row per input to --output"
            )
        return run_inputs_file(wf, args)
    if args.output or args.resume or args.executor != "local":
        raise WorkflowError("--output, --resume and --executor belong to batch runs: add --inputs FILE.jsonl")
    inputs = _parse_inputs(args.input, args.input_json, wf.spec.inputs)

    def on_node_done(node: Any) -> None:
        if args.json:
            return
        if node.skipped is not None:
            out.rule(f"[bold]{node.node}[/] · skipped", align="left")
            out.print(escape(node.skipped), style="dim")
            return
        round_ = f" · round {node.iteration}" if node.iteration else ""
        out.rule(f"[bold]{node.node}[/]{round_} · {escape(node.model)} · {node.seconds:.1f} s", align="left")
        out.print(escape(_show(node.output)))
        if node.probabilities:
            out.print(", ".join(f"{k}: {v:.3f}" for k, v in node.probabilities.items()), style="dim")

    if args.trace:
        check_output_file(Path(args.trace), "trace", args.overwrite)  # before the model work
    try:
        with err.status(f"running {wf.spec.name} ({len(wf.spec.nodes)} nodes)"):
            result = wf.run(inputs, on_node_done=on_node_done, cache=not args.no_cache)
    except NodeError as exc:
        if args.trace and isinstance(exc.partial, RunResult):
            write_file(args.trace, exc.partial.to_json(), "trace", args.overwrite)
            err.print(f"partial trace written to {args.trace}", style="dim")
        raise
    if args.trace:
        write_file(args.trace, result.to_json(), "trace", args.overwrite)
    if args.json:
        print(json.dumps(result.outputs, ensure_ascii=False, indent=2))
    else:
        err.print(f"done in {result.seconds:.1f} s", style="dim")
    return 0


#: Flags of a run on one input (flag -> its argparse name), which a batch run would ignore.
SINGLE_RUN_FLAGS = {"--input": "input", "--input-json": "input_json", "--trace": "trace", "--json": "json"}


def run_inputs_file(wf: Any, args: argparse.Namespace) -> int:
    """``ift run FILE --inputs in.jsonl --output out.jsonl``: one row per input, resumable."""
    from tqdm import tqdm

    from ..workflow.rows import check_not_inputs, count_lines, is_regular_file

    if not args.output:
        raise WorkflowError("--inputs needs --output FILE.jsonl for the result rows")
    check_not_inputs(args.output, args.inputs)
    if args.batch_size < 1:
        raise WorkflowError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.executor == "local" and (args.workers is not None or args.ray_address):
        raise WorkflowError(
            "--workers and --ray-address belong to --executor ray; a local run works in this process"
        )
    executor = wf.executor(
        args.executor, cache=not args.no_cache, address=args.ray_address, workers=args.workers
    )
    # A pipe can be read once only: no total is counted for it.
    total = count_lines(Path(args.inputs)) if is_regular_file(args.inputs) else None
    # Drawn after a second: an error found at once is not preceded by an empty bar.
    bar = tqdm(total=total, unit="item", desc=wf.spec.name, dynamic_ncols=True, delay=1.0)

    def bad_line(line: Any) -> None:
        bar.write(f"warning: {args.inputs}: {line}", file=sys.stderr)
        bar.update()

    try:
        report = wf.run_file(
            args.inputs,
            args.output,
            batch_size=args.batch_size,
            resume=args.resume,
            executor=executor,
            on_bad_line=bad_line,
            on_result=lambda result: bar.update(),
        )
    finally:
        bar.close()
    style = "dim" if report.ok else "bold red"
    err.print(f"{report.summary(args.output)}; results in {args.output}", style=style)
    if not report.ok:
        err.print("failed items carry their node and message in the 'error' field of their rows")
    return 0 if report.ok else 1
