"""The ``ift`` command. Every engine error becomes one line on stderr and exit code 2.

argparse (standard library) rather than click/typer: the command surface is small and this
keeps the core free of another dependency.
"""

from __future__ import annotations

import argparse
import codecs
import io
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from .console import err, out
from .documents import loads_json
from .errors import IftError, NodeError, WorkflowError
from .files import check_output_file, write_file

if TYPE_CHECKING:
    from .serve import ServeConfig


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
    from .workflow import RunResult, Workflow

    wf = Workflow.from_yaml(args.file)
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

    from .workflow.rows import check_not_inputs, count_lines, is_regular_file

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


#: Keys only a training file has: a document with one of them (and no nodes) is checked as one.
TRAINING_KEYS = {"base_model", "datasets", "output", "training"}


def cmd_chat(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from .models.base import GenerationSettings
    from .terminal_chat import chat, model_options

    given = {"max_new_tokens": args.max_tokens, "temperature": args.temperature, "top_p": args.top_p}
    try:
        settings = GenerationSettings(**given, seed=args.seed)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0])
        flag = {"max_new_tokens": "max-tokens", "top_p": "top-p"}.get(field, field)
        raise IftError(f"--{flag}: {first['msg']}") from None
    chat(args.model, args.backend, model_options(args.option), settings, args.system)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .documents import load_yaml_file
    from .plugins import components
    from .workflow import Workflow

    document = load_yaml_file(Path(args.file), "workflow or training file", WorkflowError)
    if isinstance(document, dict) and "nodes" not in document and TRAINING_KEYS & document.keys():
        from .training.examples import collect_examples
        from .training.trainer import build_spec

        examples, held = collect_examples(build_spec(args.file), components())
        out.print(f"{args.file}: ok (training file: {len(examples)} examples to train, {len(held)} held out)")
        return 0
    wf = Workflow.from_yaml(args.file)
    order = wf.graph.order()
    shown = " -> ".join(order[:12]) + (f" -> ... ({len(order) - 12} more)" if len(order) > 12 else "")
    out.print(f"{args.file}: ok ({len(order)} nodes, order: {shown})")
    for name, read_as in wf.graph.model_names().items():
        out.print(f"  model {name}: {read_as}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from .workflow import Workflow

    wf = Workflow.from_yaml(args.file)
    if args.png:
        from .workflow.picture import check_picture_path, draw_graph

        check_picture_path(Path(args.png), args.overwrite)
    print(wf.mermaid(), end="")
    if args.png:
        write_file(args.png, lambda staging: draw_graph(wf.graph, staging), "picture", args.overwrite)
        err.print(f"picture written to {args.png}", style="dim")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import check_export_arguments, check_export_target, export_model
    from .models.resolve import ModelSpec
    from .workflow import default_pool

    check_export_arguments(args.model, args.atol, args.device)  # before any slow work
    pool = default_pool()
    spec = ModelSpec(name=args.model)
    check_export_target(args.out, args.model, args.overwrite)
    pool.check(spec)
    # torch's ONNX tracer warns about every Python branch it meets; the parity check is the
    # real test of the export, so keep the terminal for it.
    with err.status(f"exporting {args.model}"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = pool.locate(spec)
        manifest = export_model(
            source,
            args.out,
            backend=pool.backend_for(spec).backend,
            quantize=args.quantize,
            device=args.device,
            atol=args.atol,
            overwrite=args.overwrite,
        )
    for variant, parity in manifest["parity"].items():
        measures = ", ".join(f"{k} {v:.3g}" for k, v in parity.items() if k != "probes")
        out.print(f"{variant}: {measures} (over {parity['probes']} probe prompts)")
    out.print(f"exported to {args.out}; use it with  model: {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training import train

    overrides = {"output": args.output} if args.output else {}
    if args.dry_run:
        return show_dry_run(args.file, overrides)
    result = train(args.file, resume=args.resume, overwrite=args.overwrite, **overrides)
    from .training.output import is_main_process

    if not is_main_process():  # under torchrun, the rank that wrote the model reports it
        return 0
    for key, value in result.metrics.items():
        out.print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    out.print(f"model written to {result.output}; use it with  model: {result.output}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .serve import ServeConfig, serve
    except ImportError as exc:
        raise IftError(
            f"ift serve needs the serve extra: pip install 'ift-engine[serve]' ({exc.name} is missing)"
        ) from None
    config = ServeConfig(
        paths=args.paths or ["workflows"],
        api_key=args.api_key or os.environ.get("IFT_ENGINE_API_KEY") or None,
        cache=not args.no_cache,
    )
    if not args.ray:
        if args.replicas is not None or args.ray_address:
            raise IftError("--replicas and --ray-address belong to --ray; without it the service runs here")
        serve(config, host=args.host, port=args.port, workers=1 if args.workers is None else args.workers)
        return 0
    serve_ray(config, args)
    return 0


def serve_ray(config: ServeConfig, args: argparse.Namespace) -> None:
    from .cluster import check_reachable, need_ray

    if args.workers is not None:
        raise IftError("--workers is for one machine; with --ray say --replicas N")
    need_ray("ray[serve]")
    from .serve import check_port_free
    from .serve.ray import serve_on_ray

    check_port_free(args.host, args.port)
    if args.ray_address:
        check_reachable(args.ray_address)
    replicas = 2 if args.replicas is None else args.replicas
    serve_on_ray(config, args.host, args.port, replicas, args.replica_cpus, args.ray_address)


def show_dry_run(path: str, overrides: dict[str, Any]) -> int:
    from .models.torch_thread import run_on_torch_thread
    from .training.dry_run import dry_run
    from .training.output import RunFolder
    from .training.trainer import build_spec

    spec = build_spec(path, **overrides)
    RunFolder(spec).check()  # an output folder that would be refused: say so now
    with err.status("reading the data, tokenizing, timing a few steps"):
        report = run_on_torch_thread(dry_run, spec)
    for row in report.datasets:
        formats = ", ".join(f"{n} {f}" for f, n in row["formats"].items())
        out.print(f"dataset {escape(str(row['dataset']))}: {row['records']} records ({formats})")
    out.print(f"examples: {report.train_examples} to train, {report.eval_examples} held out for eval")
    if report.paraphrases:
        out.print("paraphrases trained: " + ", ".join(f"#{p}: {n}" for p, n in report.paraphrases.items()))
    lengths = report.lengths
    out.print(
        f"tokens per example: min {lengths['min']}, median {lengths['median']:g}, max {lengths['max']}; "
        f"{report.truncated} over max_length {spec.training.max_length} (the prompt's middle is cut)"
    )
    out.rule("one example (trained tokens between ⟦ ⟧)", align="left")
    out.print(escape(report.example))
    out.rule(align="left")
    eta = report.eta_seconds
    duration = f"{eta:.0f} s" if eta < 120 else f"{eta / 60:.0f} minutes"
    out.print(
        f"{report.steps_per_epoch} steps per epoch, {report.total_steps} in all; "
        f"{report.seconds_per_step:.2f} s per step measured -> about {duration} of training"
    )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .training import TrainSpec
    from .workflow import WorkflowSpec

    print(json.dumps((TrainSpec if args.train else WorkflowSpec).model_json_schema(), indent=2))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import components, describe_plugins, plugin_manager

    rows = describe_plugins(plugin_manager())
    components()  # collect registrations so a broken hook is reported here too
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


def port_number(text: str) -> int:
    """A TCP port (argparse then says which flag and value are wrong, exit 2)."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ift", description="Instruction fine-tuning and composed tasks on fine-tuned models."
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"ift_engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

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

    chat = sub.add_parser("chat", help="chat with a model in the terminal, the reply streamed")
    chat.add_argument("model", help="an alias, a model folder, an export, a .gguf file or a hub id")
    chat.add_argument("--backend", help="hf-causal, onnx, ... (default: inferred from the model)")
    chat.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a backend option")
    chat.add_argument("--system", metavar="TEXT", help="a system message that starts the conversation")
    chat.add_argument("--max-tokens", type=int, default=256, help="most new tokens per reply (default 256)")
    chat.add_argument("--temperature", type=float, default=0.0, help="0 (default) decodes greedily")
    chat.add_argument("--top-p", type=float, default=1.0)
    chat.add_argument("--seed", type=int)
    chat.set_defaults(func=cmd_chat)

    validate = sub.add_parser("validate", help="check a workflow without running it")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_validate)

    graph = sub.add_parser("graph", help="print a workflow's DAG as Mermaid text")
    graph.add_argument("file")
    graph.add_argument("--png", metavar="PATH", help="also draw it as a picture")
    graph.add_argument("--overwrite", action="store_true", help="replace an existing picture")
    graph.set_defaults(func=cmd_graph)

    train = sub.add_parser("train", help="fine-tune a model from a training YAML file")
    train.add_argument("file", help="training YAML file")
    train.add_argument("--output", help="override the output folder")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run of the same file")
    train.add_argument(
        "--overwrite", action="store_true", help="replace a previous trained model in the output"
    )
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="check data, tokens and output; time a few steps; train nothing",
    )
    train.set_defaults(func=cmd_train)

    export = sub.add_parser("export", help="export a model to ONNX and check it against PyTorch")
    export.add_argument("model", help="alias, model folder or .gguf file")
    export.add_argument("--out", required=True, help="folder for the ONNX model")
    export.add_argument(
        "--quantize",
        choices=["int4", "int8", "fp16"],
        help="weight format besides fp32: int4, int8, fp16 (GPU) for causal LMs; int8, int4 for classifiers",
    )
    export.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    export.add_argument("--atol", type=float, default=1e-3, help="largest fp32 logit difference accepted")
    export.add_argument("--overwrite", action="store_true", help="replace a previous export in --out")
    export.set_defaults(func=cmd_export)

    serve = sub.add_parser(
        "serve", help="serve workflows and models over HTTP (REST, SSE, OpenAI-compatible)"
    )
    serve.add_argument("paths", nargs="*", help="workflow files or folders of them (default: workflows/)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=port_number, default=8000, help="1..65535 (default 8000)")
    serve.add_argument("--api-key", help="require Authorization: Bearer KEY (or set IFT_ENGINE_API_KEY)")
    serve.add_argument("--workers", type=int, help="server processes, each with its own models (default 1)")
    on_ray = serve.add_argument_group("Ray Serve (the serve and ray extras)")
    on_ray.add_argument("--ray", action="store_true", help="serve on Ray: replicas, each with its own models")
    on_ray.add_argument("--replicas", type=int, metavar="N", help="copies of the service (default 2)")
    on_ray.add_argument("--replica-cpus", type=float, default=1.0, metavar="C", help="CPUs per replica")
    on_ray.add_argument("--ray-address", metavar="ADDR", help="cluster to join (default: start one)")
    serve.add_argument("--no-cache", action="store_true", help="neither read nor write the answer cache")
    serve.set_defaults(func=cmd_serve)

    schema = sub.add_parser("schema", help="print the JSON Schema of workflow (or --train) files")
    schema.add_argument("--train", action="store_true", help="the training file format instead")
    schema.set_defaults(func=cmd_schema)

    plugins = sub.add_parser("plugins", help="list plugins, their versions and hooks")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    from .cli_eval import add_eval_parser
    from .cli_templates import add_templates_parser

    add_templates_parser(sub)
    add_eval_parser(sub)
    return parser


def quiet_weight_loading() -> None:
    """transformers 5 draws a progress bar for every weight load; the CLI shows its own progress."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported before (main called from Python): tell it directly
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def printable(exc: UnicodeError) -> tuple[str | bytes, int]:
    """The error handler of standard output and error: lone surrogates (undecodable argv bytes)
    go out as the bytes they were; a character the terminal's encoding lacks (``·`` under
    ``LC_ALL=C`` with an ASCII encoding) as ``?``."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    try:
        return codecs.lookup_error("surrogateescape")(exc)
    except UnicodeError:
        return codecs.replace_errors(exc)


codecs.register_error("ift_printable", printable)


def check_working_folder() -> None:
    try:
        os.getcwd()
    except FileNotFoundError:
        raise IftError("the current folder no longer exists (deleted?); cd into an existing folder") from None


def quiet_stdout() -> None:
    """The reader of standard output left (``| head -1``): send the rest nowhere, so that the
    flush at exit does not fail either."""
    with suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def configure_output() -> None:
    """Standard streams that print every character, warnings and logs as plain lines."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="ift_printable")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    quiet_weight_loading()
    warnings.formatwarning = lambda message, *rest, **kw: f"warning: {message}\n"
    logging.basicConfig(format="%(message)s")
    logging.getLogger("ift_engine").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    # Everything runs inside the try, heavy imports included (they happen in the commands, not
    # when this module loads), so Ctrl-C at any moment is one line and exit code 130.
    try:
        args = build_parser().parse_args(argv)
        configure_output()
        check_working_folder()
        code = args.func(args)
        if sys.stdout is not None:  # None: started with standard output closed (`>&-`)
            sys.stdout.flush()  # here, where a full disk is still reported
        return code
    except IftError as exc:
        err.print(f"[bold red]error:[/] {escape(' '.join(str(exc).split()))}")
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:  # `ift graph ... | head`: the reader left, nothing to report
        quiet_stdout()
        return 0
    except OSError as exc:  # the file system or a stream refused (a full disk, a name too long)
        where = f"{exc.filename}: " if exc.filename else "cannot write the output: "
        err.print(f"[bold red]error:[/] {escape(where)}{escape(exc.strerror or str(exc))}")
        quiet_stdout()
        return 2
    except Exception as exc:  # a last resort: every known failure is an IftError raised at its cause
        if os.environ.get("IFT_ENGINE_DEBUG"):
            raise
        err.print(
            f"[bold red]error:[/] internal error: {escape(type(exc).__name__)}: {escape(str(exc)[:300])}. "
            "This is a bug in ift_engine: please report it with the command you ran "
            "(IFT_ENGINE_DEBUG=1 shows the traceback)."
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
