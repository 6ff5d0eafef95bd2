"""``ift train``: fine-tune from a training file, or check it (``--dry-run``)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from ..console import err, out


def add_parser(sub: Any) -> None:
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


def cmd_train(args: argparse.Namespace) -> int:
    from ..engine import Engine

    overrides = {"output": args.output} if args.output else {}
    if args.dry_run:
        return show_dry_run(args.file, overrides)
    result = Engine().train(args.file, resume=args.resume, overwrite=args.overwrite, **overrides)
    from ..training.output import is_main_process

    if not is_main_process():  # under torchrun, the rank that wrote the model reports it
        return 0
    for key, value in result.metrics.items():
        out.print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    out.print(f"model written to {result.output}; use it with  model: {result.output}")
    return 0


def show_dry_run(path: str, overrides: dict[str, Any]) -> int:
    from ..engine import Engine
    from ..models.torch_thread import run_on_torch_thread
    from ..training.output import RunFolder
    from ..training.trainer import build_spec

    spec = build_spec(path, **overrides)
    RunFolder(spec).check()  # an output folder that would be refused: say so now
    with err.status("reading the data, tokenizing, timing a few steps"):
        report = run_on_torch_thread(Engine().dry_run, spec)
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
