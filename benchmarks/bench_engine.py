"""onnxruntime-genai's own scheduler, ``og.Engine``, beside the engine's model worker (cohorts of
``og.Generator``s), with the same prompts arriving a few at a time; and ``og.Engine``'s answers
token for token against one ``og.Generator`` per prompt.

    python benchmarks/bench_engine.py [--device cuda] [--model FOLDER] [--prompts 32] [--quick]

On CUDA the model is exported twice with onnxruntime-genai's builder, fp16: as ``ift export``
makes it (for the worker), and with ``use_paged_attention`` (a paged KV cache, CUDA only), with
which ``og.Engine`` batches dynamically: requests join and leave at every step. On the CPU the
builder has no paged attention; ``og.Engine`` then batches statically (4 requests at a time by
default) on the int4 export, and both paths use that one export. ``--model`` is a folder with a
config and a tokenizer (weights used when present, else random weights of that shape, as
``bench_gpu.py``). Prints a table and writes benchmarks/results/engine-<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe_machine, markdown_table, save_results

RESULTS = Path(__file__).parent / "results"


def prompts(count: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f"Write about topic number {i} in a few sentences."}]
        for i in range(count)
    ]


def weights_folder(folder: Path, workdir: Path) -> Path:
    """``folder`` itself when it holds weights, else a copy with random weights of its shape."""
    if any(folder.glob("*.safetensors")):
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    target = workdir / "weights"
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(folder).save_pretrained(target)
    return target


def build(weights: Path, out: Path, precision: str, device: str, extras: list[str]) -> Path:
    """onnxruntime-genai's builder, as ``ift export`` runs it, with ``extras`` options."""
    from transformers import AutoTokenizer

    from ift_engine.onnx.export import INT4_RECIPE

    options = [*extras, *(INT4_RECIPE if precision == "int4" else ())]
    command = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(weights),
        "-o",
        str(out),
        "-p",
        precision,
        "-e",
        device,
        "-c",
        str(out.parent / "builder-cache"),
    ]
    if options:
        command += ["--extra_options", *options]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"the builder failed ({' '.join(extras) or precision}): {done.stdout[-800:]}{done.stderr[-800:]}"
        )
    AutoTokenizer.from_pretrained(weights).save_pretrained(out)
    return out


def engine_run(
    folder: Path, ids: list[list[int]], new_tokens: int, arriving: int
) -> tuple[float, list[list[int]]]:
    """``og.Engine`` on ``ids``, ``arriving`` new requests before each step: seconds, tokens."""
    import numpy as np
    import onnxruntime_genai as og

    engine = og.Engine(og.Model(str(folder)))
    buffer = engine.create_event_buffer(1024)
    requests: dict[int, tuple[int, Any]] = {}  # kept alive: a request that goes is cancelled
    tokens: list[list[int]] = [[] for _ in ids]
    waiting = list(enumerate(ids))
    started = time.perf_counter()
    while waiting or engine.has_pending_requests():
        for index, prompt in waiting[:arriving]:
            request = engine.create_request()
            turn = og.TurnOptions(request)
            turn.set_max_generated_tokens(new_tokens)
            turn.set_do_sample(False)
            request.begin_turn(np.array(prompt, dtype=np.int32), turn)
            requests[id(request)] = (index, request)
        del waiting[:arriving]
        for event in engine.run(buffer):
            if int(event.flags) & int(og.EngineEventFlags.TOKEN):
                tokens[requests[id(event.request)][0]].append(int(event.token))
    return time.perf_counter() - started, tokens


def generator_tokens(folder: Path, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy tokens of one ``og.Generator`` (the reference)."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    out: list[int] = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


def worker_run(
    folder: Path, chats: list[Any], new_tokens: int, arriving: int, device: str
) -> tuple[float, int, list[str]]:
    """The engine's worker on the same prompts and arrivals: seconds, tokens and answers."""
    from transformers import AutoTokenizer

    from ift_engine.models.base import GenerationSettings
    from ift_engine.models.genai import GenaiCausalLM
    from ift_engine.models.ort import OnnxOptions
    from ift_engine.models.worker import ModelWorker

    options = OnnxOptions(device=device, batch_size=len(chats))
    model = GenaiCausalLM("bench", folder, AutoTokenizer.from_pretrained(folder), options)
    settings = GenerationSettings(max_new_tokens=new_tokens)
    worker = ModelWorker(model)
    try:
        worker.generate(chats[:1], settings).result()  # warm-up
        started = time.perf_counter()
        futures = []
        for i in range(0, len(chats), arriving):
            futures.append(worker.generate(chats[i : i + arriving], settings))
            time.sleep(0.002)
        answers = [c for f in futures for c in f.result()]
        seconds = time.perf_counter() - started
        return seconds, sum(c.completion_tokens or 0 for c in answers), [c.text for c in answers]
    finally:
        worker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--model", help="folder with config and tokenizer (default: the embedded model's)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.new_tokens = 6, 4
    from transformers import AutoTokenizer

    from ift_engine.models.chat import chat_ids
    from ift_engine.plugins import components

    source = (
        Path(args.model) if args.model else components().model_aliases.get("smollm2-135m-instruct").locate()
    )
    chats = prompts(args.prompts)
    arriving = 4
    with tempfile.TemporaryDirectory() as workdir:
        weights = weights_folder(source, Path(workdir))
        if args.device == "cuda":
            plain = build(weights, Path(workdir) / "fp16", "fp16", "cuda", [])
            paged_options = ["use_paged_attention=true", f"max_batch_size={args.prompts}"]
            scheduled = build(weights, Path(workdir) / "paged", "fp16", "cuda", paged_options)
        else:
            plain = scheduled = build(weights, Path(workdir) / "int4", "int4", "cpu", [])
        tokenizer = AutoTokenizer.from_pretrained(weights)
        ids = [chat_ids(tokenizer, chat) for chat in chats]
        engine_run(scheduled, ids[:1], args.new_tokens, 1)  # warm-up
        engine_seconds, engine_tokens = engine_run(scheduled, ids, args.new_tokens, arriving)
        checked = min(len(ids), 8)
        same = sum(
            engine_tokens[i] == generator_tokens(scheduled, ids[i], args.new_tokens) for i in range(checked)
        )
        worker_seconds, worker_count, worker_texts = worker_run(
            plain, chats, args.new_tokens, arriving, args.device
        )
        alone = [
            tokenizer.decode(generator_tokens(plain, ids[i], args.new_tokens), skip_special_tokens=True)
            for i in range(checked)
        ]
        worker_same = sum(worker_texts[i].strip() == alone[i].strip() for i in range(checked))
    engine_count = sum(len(t) for t in engine_tokens)
    rows = [
        {
            "path": "og.Engine" + (" (paged, dynamic)" if args.device == "cuda" else " (static batches)"),
            "tok_s": engine_count / engine_seconds,
            "parity": f"{same}/{checked}",
        },
        {
            "path": "the engine's worker (og.Generator cohorts)",
            "tok_s": worker_count / worker_seconds,
            "parity": f"{worker_same}/{checked}",
        },
    ]
    table = markdown_table(
        rows, [("path", "scheduler"), ("tok_s", "tokens/s"), ("parity", "answers equal to og.Generator's")]
    )
    lines = [
        f"og.Engine: {rows[0]['tok_s'] / rows[1]['tok_s']:.2f}x the worker's tokens/s; "
        f"answers equal to one og.Generator per prompt: og.Engine {same} of {checked}, the worker "
        f"{worker_same} of {checked}",
    ]
    print(table)
    print("\n".join(lines))
    save_results(
        RESULTS / f"engine-{args.device}{'-quick' if args.quick else ''}",
        "onnxruntime-genai's og.Engine and the engine's worker",
        f"{source.name} ({'weights' if weights == source else 'random weights of its shape'}), greedy, "
        f"{args.new_tokens} new tokens, {args.prompts} prompts arriving {arriving} at a time, device {args.device}.",
        table,
        lines,
        describe_machine(),
        {"rows": rows},
    )


if __name__ == "__main__":
    main()
