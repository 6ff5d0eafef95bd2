"""Inference speed of SmolLM2-135M-Instruct through the engine's model API, against llama.cpp.

    python benchmarks/bench_inference.py [--new-tokens 64] [--rounds 3] [--device cpu|cuda]

Backends: ``hf-causal`` (transformers with its default attention, sdpa: what a user gets), the
``onnx`` backend on onnxruntime-genai exports (fp32 and int4, plus fp16 on a GPU), and
llama.cpp on the shipped Q4_1 GGUF (the CPU peer; install llama-cpp-python to include it). All
are loaded once, then timed round-robin (every backend and batch size once per round), so drift
of the machine hits each alike; the table gives medians over the rounds.

Each call is the engine's own ``generate_stream`` with greedy decoding and ``--new-tokens`` at
most; answers stop at end of turn, so tokens are counted, not assumed (llama.cpp stops at end of
turn too). Time to first token is the first streamed text; decode tok/s = tokens after each
row's first / (time after the first token). Writes benchmarks/results/inference-<cpu|gpu>.{json,md}.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from machine import describe_machine, markdown_table, save_results

from ift_engine.models.base import GenerationSettings
from ift_engine.models.chat import format_chat
from ift_engine.models.embedded import smollm2_gguf
from ift_engine.models.resolve import MANIFEST, convert_gguf, read_json_object
from ift_engine.onnx.export import export_cached

PROMPTS = [
    "Write an outline for a short article about how honeybees communicate.",
    "Explain in simple words why the sky is blue.",
    "Give three tips for writing a clear email.",
    "What is the difference between weather and climate?",
    "Summarize the plot of a story about a lost dog finding its way home.",
    "List the planets of the solar system in order, with one fact about each.",
    "Describe how a bicycle gear works.",
    "Why do leaves change colour in autumn?",
    "Write a short poem about the sea at night.",
    "Explain what a database index is and why it helps.",
    "Give a recipe for a simple tomato soup.",
    "What should I pack for a week of hiking in the mountains?",
]
RESULTS = Path(__file__).parent / "results"
#: (seconds to the first token, seconds in all, tokens generated, rows)
Timing = tuple[float, float, int, int]


def time_engine(model: Any, prompts: list[str], new_tokens: int) -> Timing:
    """One ``generate_stream`` call; tokens counted with the model's tokenizer, end of turn included."""
    chats = [[{"role": "user", "content": p}] for p in prompts]
    first: list[float] = []
    start = time.perf_counter()
    answers = model.generate_stream(
        chats,
        GenerationSettings(max_new_tokens=new_tokens),
        lambda index, text: first.append(time.perf_counter() - start) if not first else None,
    )
    total = time.perf_counter() - start
    tokens = sum(
        min(new_tokens, len(model.tokenizer(a, add_special_tokens=False).input_ids) + 1) for a in answers
    )
    return first[0] if first else total, total, tokens, len(prompts)


def time_llama_cpp(llm: Any, text: str, new_tokens: int) -> Timing:
    tokens = llm.tokenize(text.encode(), special=True)
    stop = {llm.token_eos(), *llm.tokenize(b"<|im_end|>", add_bos=False, special=True)}
    start = time.perf_counter()
    first, count = 0.0, 0
    for token in llm.generate(tokens, temp=0.0, top_k=1, reset=True):
        count += 1
        if count == 1:
            first = time.perf_counter() - start
        if token in stop or count == new_tokens:
            break
    return first, time.perf_counter() - start, count, 1


def loaded(load: Callable[[], Any]) -> tuple[Any, float]:
    """The loaded backend, and the resident memory its loading added (MB)."""
    gc.collect()
    before = psutil.Process().memory_info().rss
    model = load()
    return model, (psutil.Process().memory_info().rss - before) / 2**20


def backends(device: str) -> dict[str, Callable[[], Any]]:
    """name -> loader, the engine's backends as a user would load them."""
    from ift_engine.models.hf_causal import CausalLMOptions, HFCausalLM
    from ift_engine.onnx.backend import OnnxModel, OnnxOptions

    folder = str(convert_gguf(smollm2_gguf()))
    formats = ["fp32", "fp16", "int8", "int4"] if device == "cuda" else ["fp32", "int8", "int4"]
    found: dict[str, Callable[[], Any]] = {
        "transformers sdpa (hf-causal)": lambda: HFCausalLM.load(
            "hf", folder, CausalLMOptions(device=device, batch_size=32)
        ),
    }
    for fmt in formats:
        export = export_cached(folder, None if fmt == "fp32" else fmt, device)  # type: ignore[arg-type]
        found[f"onnx {fmt} (genai)"] = lambda path=export: OnnxModel.load(
            "onnx", str(path), OnnxOptions(device=device, batch_size=32)
        )
    return found


def llama_cpp_loader() -> Callable[[], Any] | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama-cpp-python is not installed: llama.cpp is left out (pip install llama-cpp-python)")
        return None
    gguf = str(smollm2_gguf())
    threads = psutil.cpu_count(logical=False) or 2
    return lambda: Llama(gguf, n_ctx=1024, n_threads=threads, verbose=False)


def run_rounds(
    models: dict[str, Any], batches: list[int], rounds: int, new_tokens: int, tokenizer: Any
) -> dict:
    """Every (backend, batch) once per round, in the same order; all timings kept."""
    timings: dict[tuple[str, int], list[Timing]] = {}
    for r in range(rounds + 1):  # round 0 warms every backend up and is not kept
        for name, model in models.items():
            for batch in [1] if name.startswith("llama.cpp") else batches:
                prompts = [PROMPTS[(r * batch + i) % len(PROMPTS)] for i in range(batch)]
                if name.startswith("llama.cpp"):
                    text = format_chat(tokenizer, [{"role": "user", "content": prompts[0]}])
                    timing = time_llama_cpp(model, text, new_tokens)
                else:
                    timing = time_engine(model, prompts, new_tokens)
                if r:
                    timings.setdefault((name, batch), []).append(timing)
                    first, total, tokens, rows = timing
                    print(
                        f"round {r}  {name:>30}  batch {batch:>2}  {tokens:>4} tokens in {total:6.2f} s",
                        flush=True,
                    )
    return timings


def summarise(name: str, batch: int, runs: list[Timing], memory_mb: float) -> dict[str, Any]:
    ttft = statistics.median(t[0] for t in runs)
    decode = statistics.median((t[2] - t[3]) / max(t[1] - t[0], 1e-9) for t in runs)
    throughput = statistics.median(t[2] / t[1] for t in runs)
    return {
        "backend": name,
        "batch": batch,
        "ttft_s": ttft,
        "decode_tok_s": decode,
        "throughput_tok_s": throughput,
        "tokens": statistics.median(t[2] for t in runs),
        "load_rss_mb": memory_mb,
    }


def parity_of(export_name: str, device: str) -> dict[str, Any]:
    folder = str(convert_gguf(smollm2_gguf()))
    fmt = export_name.split()[1]
    export = export_cached(folder, None if fmt == "fp32" else fmt, device)  # type: ignore[arg-type]
    return read_json_object(Path(export) / MANIFEST)["parity"][fmt]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(convert_gguf(smollm2_gguf()))
    loaders = backends(args.device)
    llama = llama_cpp_loader() if args.device == "cpu" else None
    if llama:
        loaders["llama.cpp Q4_1 (GGUF)"] = llama
    models, memory = {}, {}
    for name, load in loaders.items():
        models[name], memory[name] = loaded(load)
    batches = [1, 8, 32] if args.device == "cuda" else [1, 8]
    timings = run_rounds(models, batches, args.rounds, args.new_tokens, tokenizer)
    rows = [summarise(name, batch, runs, memory[name]) for (name, batch), runs in timings.items()]
    report(rows, args, llama is not None)


def report(rows: list[dict[str, Any]], args: argparse.Namespace, with_llama: bool) -> None:
    def pick(backend: str, batch: int) -> dict[str, Any]:
        return next(r for r in rows if r["backend"] == backend and r["batch"] == batch)

    def ratio(text: str, a: dict[str, Any], b: dict[str, Any], key: str, target: str) -> str:
        return f"{text}: {a[key] / b[key]:.2f}x (target {target})"

    sdpa, fp32, int4 = "transformers sdpa (hf-causal)", "onnx fp32 (genai)", "onnx int4 (genai)"
    summary = [
        ratio(
            "onnx fp32 / transformers sdpa, batch-1 decode",
            pick(fp32, 1),
            pick(sdpa, 1),
            "decode_tok_s",
            ">= 1.5x",
        ),
        ratio(
            "onnx int4 / transformers sdpa, batch-1 decode", pick(int4, 1), pick(sdpa, 1), "decode_tok_s", "-"
        ),
        ratio(
            "onnx int4 / transformers sdpa, batch-8 throughput",
            pick(int4, 8),
            pick(sdpa, 8),
            "throughput_tok_s",
            "-",
        ),
    ]
    if with_llama:
        llama = pick("llama.cpp Q4_1 (GGUF)", 1)
        summary += [
            ratio(
                "onnx int4 / llama.cpp Q4_1, batch-1 decode", pick(int4, 1), llama, "decode_tok_s", ">= 1.0x"
            ),
            ratio(
                "onnx int4 batch-8 throughput / llama.cpp one request at a time",
                pick(int4, 8),
                llama,
                "throughput_tok_s",
                ">= 2.5x",
            ),
        ]
    for name in (fp32, "onnx int8 (genai)", int4):
        parity = parity_of(name, args.device)
        summary.append(
            f"{name} against PyTorch fp32 (export parity check): top-1 agreement "
            f"{parity['top1_agreement']:.3f}, greedy agreement {parity['greedy_agreement']:.3f}, "
            f"largest logit difference {parity['max_abs_logit_diff']:.3g}"
        )
    columns = [
        ("backend", "backend"),
        ("batch", "batch"),
        ("tokens", "tokens (median)"),
        ("ttft_s", "time to first token (s)"),
        ("decode_tok_s", "decode tok/s"),
        ("throughput_tok_s", "throughput tok/s"),
        ("load_rss_mb", "RSS added by loading (MB)"),
    ]
    table = markdown_table(rows, columns)
    print("\n" + table + "\n\n" + "\n".join(summary))
    machine = describe_machine(
        ("torch", "transformers", "onnxruntime-gpu", "onnxruntime-genai-cuda", "llama-cpp-python")
    )
    kind = "gpu" if args.device == "cuda" else "cpu"
    save_results(
        RESULTS / f"inference-{kind}",
        f"Inference speed ({kind.upper()})",
        f"SmolLM2-135M-Instruct through the engine's model API (`generate_stream`, greedy, at most "
        f"{args.new_tokens} new tokens, stopping at end of turn), medians of {args.rounds} round-robin "
        "rounds. `python benchmarks/bench_inference.py`",
        table,
        summary,
        machine,
        {"rows": rows, "new_tokens": args.new_tokens, "rounds": args.rounds},
    )


if __name__ == "__main__":
    main()
