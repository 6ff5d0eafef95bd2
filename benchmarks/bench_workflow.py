"""Throughput of a composed task: topics through workflows/article.yaml (outline -> content) on
the embedded SmolLM2-135M-Instruct, four ways, in one process on the same topics:

  (a) naive: a hand-written loop of transformers calls, one topic at a time;
  (b) the engine, one topic at a time (``wf.run``), same backend: the engine's overhead;
  (c) the engine batched (``wf.run_many``, one model call per node per batch);
  (d) (c) on the ``onnx`` backend (onnxruntime-genai, fp32 export);
  (e) (c) on the ``onnx`` backend with the int4 export (the fast path).

    python benchmarks/bench_workflow.py [--topics 16] [--batch-size 16]

Greedy decoding, answer cache off. Prints a table and writes
benchmarks/results/workflow-<cpu|gpu>.{json,md}; "same as (a)" counts the topics whose article
is identical to the naive loop's.
"""

from __future__ import annotations

import argparse
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine import describe_machine, markdown_table, save_results

from ift_engine.models.base import GenerationSettings
from ift_engine.models.resolve import ModelPool, ModelSpec
from ift_engine.models.torch_thread import run_on_torch_thread
from ift_engine.plugins import components
from ift_engine.workflow import Workflow

ARTICLE = Path(__file__).parent.parent / "workflows" / "article.yaml"
RESULTS = Path(__file__).parent / "results"
BULLET = re.compile(r"^\s*(?:[-*•·]+|\d+[.)、]|#+)\s*")  # "- ", "1. ", "## " before a heading
TOPICS = [
    "How honeybees communicate",
    "Why the sky is blue",
    "The history of the bicycle",
    "How vaccines train the immune system",
    "Growing tomatoes on a balcony",
    "What makes a good night's sleep",
    "How a refrigerator keeps food cold",
    "The water cycle",
    "Learning a second language as an adult",
    "How bridges carry heavy loads",
    "Why cats purr",
    "The basics of compound interest",
    "How volcanoes form",
    "Writing a clear email",
    "The life of a honeybee colony in winter",
    "How solar panels make electricity",
    "Why leaves change colour in autumn",
    "How a compass finds north",
    "The invention of the printing press",
    "Keeping a houseplant alive",
]


def naive(folder: str, wf: Workflow) -> Callable[[list[str]], list[str]]:
    """What one would write without the engine: format, generate, parse, repeat per topic.
    Returns the loop, with the model loaded and warmed up (the engine's models are too)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>"), model.generation_config.eos_token_id]
    nodes = {n.id: n for n in wf.spec.nodes}
    outline_text = components().templates.get("outline-en").paraphrases[0]
    content_text = components().templates.get("content-en").paraphrases[0]

    def ask(prompt: str, max_new_tokens: int) -> str:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                repetition_penalty=wf.spec.generation.repetition_penalty,
                eos_token_id=stop,
                pad_token_id=tokenizer.pad_token_id,
            )
        return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    def loop(topics: list[str]) -> list[str]:
        articles = []
        for topic in topics:
            outline = ask(outline_text.format(topic=topic), nodes["outline"].generation.max_new_tokens)
            lines = [BULLET.sub("", line).strip() for line in outline.splitlines()]
            outline = "\n".join(line for line in lines if line)
            content = content_text.format(topic=topic, outline=outline)
            articles.append(ask(content, nodes["content"].generation.max_new_tokens))
        return articles

    ask("Say hello.", 8)
    return loop


def timed(name: str, run: Callable[[], list[str]], topics: int) -> tuple[dict[str, Any], list[str]]:
    started = time.perf_counter()
    articles = run()
    seconds = time.perf_counter() - started
    row = {"way": name, "seconds": seconds, "topics_per_min": 60 * topics / seconds}
    print(f"{name}: {seconds:.1f} s", flush=True)
    return row, articles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topics", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    topics = TOPICS[: args.topics]
    records = [{"topic": t} for t in topics]

    doc = Workflow.from_yaml(ARTICLE).to_dict()
    name = doc["model"]
    # The model's batch_size option caps the rows decoded together (default 16): as --batch-size.
    options = {"batch_size": args.batch_size}
    eager = Workflow.from_dict({**doc, "model": {"name": name, "options": options}}, source=str(ARTICLE))
    onnx = Workflow.from_dict(
        {**doc, "model": {"name": name, "backend": "onnx", "options": options}}, source=str(ARTICLE)
    )
    int4 = Workflow.from_dict(
        {**doc, "model": {"name": name, "backend": "onnx", "options": {**options, "quantize": "int4"}}},
        source=str(ARTICLE),
    )
    folder = ModelPool(components()).locate(ModelSpec(name=name))
    # Load (and for ONNX, export on first use) before any clock starts.
    for wf in (eager, onnx, int4):
        wf.runner(cache=False).load_models()
        warm_up = wf.pool.get(wf.graph.node("outline").model)
        warm_up.generate([[{"role": "user", "content": "Say hello."}]], GenerationSettings(max_new_tokens=8))

    def engine_batched(wf: Workflow) -> list[str]:
        results = {r.id: r for r in wf.run_many(records, batch_size=args.batch_size, cache=False)}
        return [results[i + 1]["article"] for i in range(len(topics))]

    # The engine runs PyTorch on its torch thread; the naive loop runs there too, so both ways of
    # this one process share one OpenMP team (in a program of its own, a user's loop would have
    # its main thread's team to itself, which is the same).
    naive_loop = run_on_torch_thread(naive, folder, eager)
    runs = [
        ("(a) naive transformers loop", lambda: run_on_torch_thread(naive_loop, topics)),
        ("(b) engine, one at a time", lambda: [eager.run(topic=t, cache=False)["article"] for t in topics]),
        (f"(c) engine, batched ({args.batch_size})", lambda: engine_batched(eager)),
        (f"(d) engine, batched ({args.batch_size}), onnx fp32", lambda: engine_batched(onnx)),
        (f"(e) engine, batched ({args.batch_size}), onnx int4", lambda: engine_batched(int4)),
    ]
    rows, outputs = [], []
    for name, run in runs:
        row, articles = timed(name, run, len(topics))
        rows.append(row)
        outputs.append(articles)
    for row, articles in zip(rows, outputs):
        row["speedup"] = rows[0]["seconds"] / row["seconds"]
        row["same_as_a"] = f"{sum(x == y for x, y in zip(articles, outputs[0]))}/{len(topics)}"

    machine = describe_machine()
    table = markdown_table(
        rows,
        [
            ("way", "way"),
            ("seconds", "seconds"),
            ("topics_per_min", "topics/min"),
            ("speedup", "x (a)"),
            ("same_as_a", "same article as (a)"),
        ],
    )
    overhead = rows[1]["seconds"] / rows[0]["seconds"] - 1
    summary = [
        f"engine overhead, (b) vs (a): {100 * overhead:+.1f}% (target under 2%)",
        f"batched onnx fp32 (d) / naive (a) throughput: {rows[3]['speedup']:.2f}x",
        f"batched onnx int4 (e) / naive (a) throughput: {rows[4]['speedup']:.2f}x (target at least 10x)",
        f"int4 articles identical to the fp32 export's (d): "
        f"{sum(x == y for x, y in zip(outputs[4], outputs[3]))}/{len(topics)} (int4 changes weights, "
        "so greedy text may differ)",
    ]
    print("\n" + table + "\n\n" + "\n".join(summary))

    device = "gpu" if machine["gpu"] else "cpu"
    save_results(
        RESULTS / f"workflow-{device}",
        f"Workflow benchmark ({device})",
        "`workflows/article.yaml` (outline, 80 new tokens -> content, 200 new tokens) on "
        f"SmolLM2-135M-Instruct, {len(topics)} topics, greedy, answer cache off, one run.",
        table,
        summary,
        machine,
        {"topics": topics, "batch_size": args.batch_size, "rows": rows},
    )


if __name__ == "__main__":
    main()
