"""Inference speed of SmolLM2-135M-Instruct: transformers eager, ONNX Runtime fp32/int8/int4,
and llama.cpp on the shipped GGUF, in one process on the same prompts.

    python benchmarks/bench_inference.py [--new-tokens 64] [--device cpu|cuda]

Prints a table and writes benchmarks/results/inference-<cpu|gpu>.{json,md}. Every run decodes
exactly --new-tokens tokens per prompt (end of turn is ignored) so backends do equal work.
Decode tokens/s = tokens after the first / (time for all - time to first token).
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from machine import describe_machine, markdown_table, save_results

from ift_engine.default_plugins.models import smollm2_gguf
from ift_engine.export import export_cached
from ift_engine.models.chat import encode_chats, format_chat
from ift_engine.models.resolve import convert_gguf

PROMPTS = [
    "Write an outline for a short article about how honeybees communicate.",
    "Explain in simple words why the sky is blue.",
    "Give three tips for writing a clear email.",
    "What is the difference between weather and climate?",
    "Summarize the plot of a story about a lost dog finding its way home.",
    "List the planets of the solar system in order.",
    "Describe how a bicycle gear works.",
    "Why do leaves change colour in autumn?",
]
RESULTS = Path(__file__).parent / "results"


class PeakRSS:
    """Samples this process's resident memory every 5 ms; ``peak`` is the highest seen."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def time_hf(
    model: Any, tokenizer: Any, prompts: list[str], new_tokens: int, device: str
) -> tuple[float, float]:
    """(seconds to the first token, seconds for all ``new_tokens``) for one batch."""
    import torch

    enc = encode_chats(tokenizer, [[{"role": "user", "content": p}] for p in prompts]).to(device)

    def run(n: int) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                **enc,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return run(1), run(new_tokens)


def time_llama_cpp(llm: Any, prompt: str, new_tokens: int) -> tuple[float, float]:
    tokens = llm.tokenize(prompt.encode(), special=True)
    llm.reset()
    start = time.perf_counter()
    first = 0.0
    for i, _ in enumerate(llm.generate(tokens, temp=0.0, top_k=1, reset=True)):
        if i == 0:
            first = time.perf_counter() - start
        if i + 1 == new_tokens:
            break
    return first, time.perf_counter() - start


def measure(
    name: str,
    batch: int,
    load: Callable[[], Any],
    timer: Callable[[Any, list[str]], tuple[float, float]],
    new_tokens: int,
    rounds: int,
) -> dict[str, Any]:
    """Load, warm up, then time ``rounds`` batches of ``batch`` prompts."""
    gc.collect()
    before = psutil.Process().memory_info().rss
    with PeakRSS() as memory:
        model = load()
        timer(model, PROMPTS[:batch])  # warm-up: first-call allocations and kernel choice
        firsts, totals = [], []
        for r in range(rounds):
            prompts = [PROMPTS[(r * batch + i) % len(PROMPTS)] for i in range(batch)]
            first, total = timer(model, prompts)
            firsts.append(first)
            totals.append(total)
    del model
    gc.collect()
    first, total = sum(firsts) / rounds, sum(totals) / rounds
    row = {
        "backend": name,
        "batch": batch,
        "ttft_s": first,
        "decode_tok_s": batch * (new_tokens - 1) / (total - first),
        "throughput_tok_s": batch * new_tokens / total,
        "peak_rss_mb": (memory.peak - before) / 2**20,
    }
    print(
        f"{name:>22}  batch {batch:>2}  ttft {first:6.3f} s  decode {row['decode_tok_s']:7.1f} tok/s  "
        f"throughput {row['throughput_tok_s']:7.1f} tok/s  peak +{row['peak_rss_mb']:.0f} MB",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ift_engine.models.onnx import CPU, CUDA

    folder = convert_gguf(smollm2_gguf())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    exports = {q: export_cached(str(folder), q) for q in (None, "int8", "int4")}
    provider = CUDA if args.device == "cuda" else CPU
    batches = [1, 8, 32] if args.device == "cuda" else [1, 8]
    n = args.new_tokens

    def hf_timer(model: Any, prompts: list[str]) -> tuple[float, float]:
        return time_hf(model, tokenizer, prompts, n, args.device)

    configs: list[tuple[str, Callable[[], Any]]] = [
        (
            "transformers eager",
            lambda: (
                AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
                .to(args.device)
                .eval()
            ),
        ),
    ]
    for quantize, path in exports.items():
        if args.device == "cuda" and quantize:
            continue  # the int8/int4 kernels measured here are CPU ones
        configs.append(
            (
                f"onnxruntime {quantize or 'fp32'}",
                lambda p=path: ORTModelForCausalLM.from_pretrained(
                    p, provider=provider, use_io_binding=provider == CUDA
                ),
            )
        )

    rows = []
    for name, load in configs:
        for batch in batches:
            rows.append(measure(name, batch, load, hf_timer, n, args.rounds))
    if args.device == "cpu":
        from llama_cpp import Llama

        gguf = smollm2_gguf()

        def llama_timer(llm: Any, prompts: list[str]) -> tuple[float, float]:
            text = format_chat(tokenizer, [{"role": "user", "content": prompts[0]}])
            return time_llama_cpp(llm, text, n)

        rows.append(
            measure(
                "llama.cpp Q4_1 (GGUF)",
                1,
                lambda: Llama(
                    str(gguf),
                    n_ctx=1024,
                    n_threads=psutil.cpu_count(logical=False) or 2,
                    verbose=False,
                ),
                llama_timer,
                n,
                args.rounds,
            )
        )

    machine = describe_machine(
        ("torch", "transformers", "onnxruntime-gpu", "optimum-onnx", "llama-cpp-python")
    )
    columns = [
        ("backend", "backend"),
        ("batch", "batch"),
        ("ttft_s", "time to first token (s)"),
        ("decode_tok_s", "decode tok/s"),
        ("throughput_tok_s", "throughput tok/s"),
        ("peak_rss_mb", "peak RSS added (MB)"),
    ]
    table = markdown_table(rows, columns)

    def pick(backend: str, batch: int) -> dict[str, Any]:
        return next(r for r in rows if r["backend"] == backend and r["batch"] == batch)

    def ratio(text: str, a: dict[str, Any], b: dict[str, Any], key: str) -> str:
        return f"{text}: {a[key] / b[key]:.2f}x"

    fp32 = "onnxruntime fp32"
    summary = [
        ratio(
            "ONNX Runtime fp32 / transformers eager, batch-1 decode",
            pick(fp32, 1),
            pick("transformers eager", 1),
            "decode_tok_s",
        ),
    ]
    if args.device == "cpu":
        llama = pick("llama.cpp Q4_1 (GGUF)", 1)
        summary += [
            ratio(
                "ONNX Runtime fp32 batch-8 throughput / llama.cpp one-at-a-time",
                pick(fp32, 8),
                llama,
                "throughput_tok_s",
            ),
            ratio(
                "llama.cpp / ONNX Runtime int4, batch-1 decode",
                llama,
                pick("onnxruntime int4", 1),
                "decode_tok_s",
            ),
        ]
    else:
        summary.append(
            ratio(
                "ONNX Runtime CUDA batch-32 / batch-1 throughput",
                pick(fp32, 32),
                pick(fp32, 1),
                "throughput_tok_s",
            )
        )
    print("\n" + table + "\n\n" + "\n".join(summary))

    save_results(
        RESULTS / f"inference-{args.device}",
        f"Inference benchmark ({args.device})",
        f"SmolLM2-135M-Instruct, {n} new tokens per prompt, greedy, mean of {args.rounds} rounds.\n"
        f"Command: `python benchmarks/bench_inference.py --device {args.device}`",
        table,
        summary,
        machine,
        {"new_tokens": n, "rounds": args.rounds, "rows": rows},
    )


if __name__ == "__main__":
    main()
