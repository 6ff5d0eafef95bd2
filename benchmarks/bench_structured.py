"""Structured answers on the embedded SmolLM2-135M-Instruct: N short texts about a person, each
asking for a JSON object with three typed fields (name: string, age: integer, employed:
boolean), answered with and without decoding constrained to the schema, on PyTorch and on the
int4 export (onnxruntime-genai).

    python benchmarks/bench_structured.py [--prompts 100] [--batch-size 16] [--quick]

For each way: the share of answers that parse and validate against the schema (the engine's
own ``json`` parser with the schema: what a workflow node accepts), the share whose three
fields are the ones in the text, and decode speed (generated tokens per second over the whole
run, every prompt submitted at once to the model's worker, continuous batching). Greedy, 64
new tokens at most. Prints a table and writes benchmarks/results/structured-<cpu|gpu>.{json,md}.
"""

from __future__ import annotations

import argparse
import random
import time
import warnings
from pathlib import Path
from typing import Any

from machine import describe_machine, markdown_table, save_results

from ift_engine.errors import ParseError
from ift_engine.models.base import GenerationSettings
from ift_engine.models.resolve import ModelPool, ModelSpec
from ift_engine.parsers import parse_json
from ift_engine.plugins import components
from ift_engine.structured import Constraint, choice_constraint, json_constraint
from ift_engine.templates import AnswerForm, InstructionTemplate

RESULTS = Path(__file__).parent / "results"
MODEL = "smollm2-135m-instruct"
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "employed": {"type": "boolean"},
    },
    "required": ["name", "age", "employed"],
    "additionalProperties": False,
}
NAMES = [
    "Maria Lopez",
    "Tom Becker",
    "Aiko Sato",
    "Liam Walsh",
    "Nadia Haddad",
    "Pavel Novak",
    "Grace Okafor",
]
JOBS = [
    "works as a nurse",
    "is retired",
    "teaches at a school",
    "is out of work",
    "runs a bakery",
    "is unemployed",
]
EMPLOYED = {"works as a nurse": True, "teaches at a school": True, "runs a bakery": True}
INSTRUCTION = (
    "Read the text and answer with a JSON object with the keys name (string), age (integer) and "
    "employed (true or false).\n\nText: {text}"
)


def cases(count: int) -> list[tuple[str, dict[str, Any]]]:
    """(text, the record it describes), the same every run."""
    pick = random.Random(0)
    out = []
    for _ in range(count):
        name, job, age = pick.choice(NAMES), pick.choice(JOBS), pick.randrange(18, 90)
        text = f"{name} is {age} years old and {job}."
        out.append((text, {"name": name, "age": age, "employed": EMPLOYED.get(job, False)}))
    return out


def run_way(
    pool: ModelPool, spec: ModelSpec, items: list[tuple[str, dict[str, Any]]], constraint: Constraint | None
) -> dict[str, Any]:
    """Every prompt at once to the model's worker; the shares that validate and are right."""
    template = InstructionTemplate.inline("record", INSTRUCTION, AnswerForm.JSON, schema=SCHEMA)
    prompts = [list(template.render({"text": text}).messages) for text, _ in items]
    settings = GenerationSettings(max_new_tokens=64)
    worker = pool.worker(spec)
    worker.generate(prompts[:1], settings, None, constraint).result()  # warm-up (and the tokenizer)
    began = time.perf_counter()
    answers = worker.generate(prompts, settings, None, constraint).result()
    seconds = time.perf_counter() - began
    valid = right = tokens = 0
    for answer, (_, truth) in zip(answers, items):
        tokens += answer.completion_tokens or 0
        try:
            value = parse_json(answer.text, template)
        except ParseError:
            continue
        valid += 1
        right += value == truth
    return {
        "valid": valid / len(items),
        "right": right / len(items),
        "tok_s": tokens / seconds,
        "seconds": seconds,
    }


GOOD = ["the room was clean", "the staff were kind", "breakfast was excellent", "the bed was comfortable"]
BAD = ["the room was dirty", "the staff were rude", "breakfast was cold", "the bed was broken"]


def reviews(count: int) -> list[tuple[str, str]]:
    """(review, its label), the same every run: two remarks, both good or both bad."""
    pick = random.Random(1)
    out = []
    for i in range(count):
        label, pool = ("positive", GOOD) if i % 2 == 0 else ("negative", BAD)
        out.append((f"Our stay: {' and '.join(pick.sample(pool, 2))}.", label))
    return out


def label_ways(pool: ModelPool, spec: ModelSpec, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """A label node's two ways on one model: scoring each label (what a label node does on a
    causal LM) and generating under the labels' constraint."""
    template = components().templates.get("sentiment-en")
    labels = list(template.labels)
    prompts = [list(template.render({"text": text}).messages) for text, _ in items]
    worker = pool.worker(spec)
    settings = GenerationSettings(max_new_tokens=8)
    constraint = choice_constraint(labels)
    rows = []
    for way in ("scored", "generated under the labels"):

        def ask(chosen: list[Any], way: str = way) -> list[str]:
            if way == "scored":
                return [
                    labels[max(range(len(p)), key=p.__getitem__)]
                    for p in worker.classify(chosen, labels).result()
                ]
            return [a.text.strip() for a in worker.generate(chosen, settings, None, constraint).result()]

        ask(prompts[:1])  # warm-up
        began = time.perf_counter()
        answers = ask(prompts)
        seconds = time.perf_counter() - began
        right = sum(a == truth for a, (_, truth) in zip(answers, items))
        rows.append(
            {
                "way": way,
                "right": right / len(items),
                "prompts_s": len(items) / seconds,
                "in_labels": sum(a in labels for a in answers) / len(items),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="8 prompts: a smoke run")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    items = cases(8 if args.quick else args.prompts)
    pool = ModelPool(components())
    options = {"batch_size": args.batch_size}
    backends = {
        "PyTorch": ModelSpec(name=MODEL, options=options),
        "onnx int4": ModelSpec(name=MODEL, backend="onnx", options={**options, "quantize": "int4"}),
    }
    constraint = json_constraint(SCHEMA)
    rows = []
    for backend, spec in backends.items():
        for label, chosen in (("free", None), ("constrained", constraint)):
            row = {"backend": backend, "decoding": label, **run_way(pool, spec, items, chosen)}
            print(f"{backend}, {label}: {row}", flush=True)
            rows.append(row)
    label_rows = []
    for backend, spec in backends.items():
        for row in label_ways(pool, spec, reviews(8 if args.quick else args.prompts)):
            label_rows.append({"backend": backend, **row})
            print(f"{backend}, labels {row}", flush=True)
    pool.close()
    report(args, rows, len(items), label_rows)


def report(
    args: argparse.Namespace, rows: list[dict[str, Any]], count: int, label_rows: list[dict[str, Any]]
) -> None:
    columns = [
        ("backend", "backend"),
        ("decoding", "decoding"),
        ("valid", "parse + validate"),
        ("right", "fields right"),
        ("tok_s", "tok/s"),
        ("seconds", "seconds"),
    ]
    table = markdown_table(rows, columns)
    summary = []
    for free, constrained in zip(rows[::2], rows[1::2]):
        summary.append(
            f"{free['backend']}: valid answers {100 * free['valid']:.0f}% free, "
            f"{100 * constrained['valid']:.0f}% constrained; decode speed constrained / free: "
            f"{constrained['tok_s'] / free['tok_s']:.2f}x; wall time constrained / free: "
            f"{constrained['seconds'] / free['seconds']:.2f}x (a constrained answer ends with its JSON)"
        )
    label_columns = [
        ("backend", "backend"),
        ("way", "label answer"),
        ("right", "right"),
        ("in_labels", "one of the labels"),
        ("prompts_s", "prompts/s"),
    ]
    table += "\n\nA label node (sentiment-en, positive/negative) on the same model, two ways:\n\n"
    table += markdown_table(label_rows, label_columns)
    for scored, generated in zip(label_rows[::2], label_rows[1::2]):
        summary.append(
            f"{scored['backend']} labels: generating under the labels runs at "
            f"{generated['prompts_s'] / scored['prompts_s']:.2f}x the prompts/s of scoring them, "
            f"{100 * generated['right']:.0f}% right vs {100 * scored['right']:.0f}%"
        )
    print("\n" + table + "\n\n" + "\n".join(summary))
    machine = describe_machine()
    device = "gpu" if machine["gpu"] else "cpu"
    save_results(
        RESULTS / f"structured-{device}",
        f"Structured answers ({device})",
        f"{count} prompts asking SmolLM2-135M-Instruct for a JSON object with three typed fields, "
        f"greedy, 64 new tokens at most, all submitted at once (batch size {args.batch_size}); "
        "free decoding against decoding constrained to the schema, one run.",
        table,
        summary,
        machine,
        {
            "prompts": count,
            "batch_size": args.batch_size,
            "schema": SCHEMA,
            "rows": rows,
            "labels": label_rows,
        },
    )


if __name__ == "__main__":
    main()
