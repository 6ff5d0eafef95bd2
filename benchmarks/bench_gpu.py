"""PyTorch generation on a GPU: transformers' ``generate`` at batch 1, 8 and 32 against the
engine's model worker (continuous batching) with the same prompts arriving a few at a time, on a
model of SmolLM2-135M's shape.

    python benchmarks/bench_gpu.py [--device cuda] [--model FOLDER] [--quick]

``--model`` is a folder with a config and a tokenizer: its weights are used when present, else
random weights of that shape (speed depends on the shape, not the weights; answers then run to
the token limit). The lent GPU machines reach no hub and have no copy of the model, so
``gpu_check.sh`` carries the embedded model's config and tokenizer. Prints a table and writes
benchmarks/results/gpu-<device>.{json,md}; ``--quick`` is the suite's smoke run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from machine import describe_machine, markdown_table, save_results

RESULTS = Path(__file__).parent / "results"


def load(folder: Path, device: str) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ift_engine.models.hf_causal import HFCausalLM
    from ift_engine.models.torch_utils import load_pretrained

    if any(folder.glob("*.safetensors")):
        model, tokenizer = load_pretrained(
            AutoModelForCausalLM, "causal LM", "bench", str(folder), device, "auto"
        )
    else:
        from transformers import AutoTokenizer

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return HFCausalLM("bench", model, tokenizer, batch_size=32)


def prompts(count: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f"Write about topic number {i} in a few sentences."}]
        for i in range(count)
    ]


def tokens_per_second(run: Any, rounds: int) -> float:
    speeds = []
    for _ in range(rounds):
        started = time.perf_counter()
        tokens = run()
        speeds.append(tokens / (time.perf_counter() - started))
    return statistics.median(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--model", help="folder with config and tokenizer (default: the embedded model's)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from ift_engine.models.base import GenerationSettings
    from ift_engine.models.chat import encode_chats
    from ift_engine.models.worker import ModelWorker
    from ift_engine.plugins import components

    folder = (
        Path(args.model) if args.model else components().model_aliases.get("smollm2-135m-instruct").locate()
    )
    model = load(folder, args.device)
    new_tokens = 4 if args.quick else args.new_tokens
    sizes, rounds = ([1, 2], 1) if args.quick else ([1, 8, 32], 3)
    settings = GenerationSettings(max_new_tokens=new_tokens)
    import torch

    def plain(n: int) -> int:
        enc = encode_chats(model.tokenizer, prompts(n)).to(model.device)
        with torch.inference_mode():
            out = model.model.generate(
                **enc,
                max_new_tokens=new_tokens,
                do_sample=False,
                top_k=None,
                top_p=None,
                temperature=None,
                eos_token_id=model.stop_ids,
                pad_token_id=model.tokenizer.pad_token_id,
            )
        return int((out[:, enc["input_ids"].shape[1] :] != model.tokenizer.pad_token_id).sum())

    worker = ModelWorker(model)

    def continuous(n: int) -> int:
        futures = []
        for i in range(0, n, 4):  # a few at a time, as requests arrive
            futures.append(worker.generate(prompts(n)[i : i + 4], settings))
            time.sleep(0.002)
        return sum(c.completion_tokens or 0 for f in futures for c in f.result())

    plain(1), continuous(1)  # warm-up: kernels, allocator
    rows = []
    for n in sizes:
        rows.append(
            {
                "batch": n,
                "generate": tokens_per_second(lambda n=n: plain(n), rounds),
                "worker": tokens_per_second(lambda n=n: continuous(n), rounds),
            }
        )
    worker.close()
    for row in rows:
        row["ratio"] = row["worker"] / row["generate"]
    table = markdown_table(
        rows,
        [
            ("batch", "prompts"),
            ("generate", "generate tok/s"),
            ("worker", "worker tok/s"),
            ("ratio", "worker / generate"),
        ],
    )
    lines = [
        f"{r['batch']} prompts: the worker decodes {r['ratio']:.2f}x the tokens/s of one generate call"
        for r in rows
    ]
    print(table)
    print("\n".join(lines))
    save_results(
        RESULTS / f"gpu-{args.device}{'-quick' if args.quick else ''}",
        "PyTorch generation: transformers generate and the engine's worker",
        f"SmolLM2-135M's shape ({folder.name}), greedy, {new_tokens} new tokens, device {args.device}, median of {rounds}.",
        table,
        lines,
        describe_machine(),
        {"rows": rows},
    )


if __name__ == "__main__":
    main()
