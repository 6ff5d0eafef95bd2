"""Three fine-tuned subtask models as three merged copies of the base, or as one base plus three
LoRA adapters: resident memory, disk, and workflows/article.yaml with a third node on them.

The article workflow (outline -> content) gets a third node, ``title`` (topic-en over the
article), so each of three models serves one node. Adapters are random LoRA weights (r 8 on
q/k/v/o, B ~ N(0, 0.02): small enough that the text stays text), made here in seconds; each
merged model is its adapter merged with peft's ``merge_and_unload``. The workflow runs the
topics batched, greedy, answer cache off, on PyTorch and on the ONNX exports (fp32).

    python benchmarks/bench_adapters.py [--topics 16] [--quick] [--no-onnx]

Writes benchmarks/results/adapters-<cpu|gpu>.{json,md} (``--quick``: ``-quick``, tiny counts,
to check the script runs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from bench_workflow import TOPICS
from machine import describe_machine, markdown_table, save_results

ARTICLE = Path(__file__).parent.parent / "workflows" / "article.yaml"
RESULTS = Path(__file__).parent / "results"
BASE = "smollm2-135m-instruct"
SEEDS = (1, 2, 3)


def make_models(base_folder: Path, work: Path) -> tuple[list[Path], list[Path]]:
    """Three random adapters (with the manifest `ift train` writes) and their merged models."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ift_engine.training.run import adapter_record

    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    adapters, merged = [], []
    for seed in SEEDS:
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_folder), config)
        torch.manual_seed(seed)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.data.normal_(0, 0.02)
        adapter = work / f"adapter{seed}"
        model.save_pretrained(adapter)
        record = adapter_record(str(base_folder), str(base_folder))
        (adapter / "ift_model.json").write_text(json.dumps({"backend": "hf-causal", "adapter": record}))
        plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder), adapter)
        plain.merge_and_unload().save_pretrained(work / f"merged{seed}")
        tokenizer.save_pretrained(work / f"merged{seed}")
        adapters.append(adapter)
        merged.append(work / f"merged{seed}")
    return adapters, merged


def folder_bytes(*folders: Path) -> int:
    return sum(p.stat().st_size for folder in folders for p in folder.rglob("*") if p.is_file())


def article(models: list[Any], backend: str | None, max_new_tokens: int | None) -> dict[str, Any]:
    """article.yaml plus a title node, node i on ``models[i]``."""
    spec = yaml.safe_load(ARTICLE.read_text())
    spec["nodes"].append(
        {
            "id": "title",
            "template": "topic-en",
            "inputs": {"text": "content.output"},
            "generation": {"max_new_tokens": 16},
        }
    )
    spec["outputs"]["title"] = "title.output"
    for node, model in zip(spec["nodes"], models):
        node["model"] = model
        if max_new_tokens is not None:
            node["generation"]["max_new_tokens"] = max_new_tokens
    if backend:
        spec["backend"] = backend
    spec.pop("model", None)
    return spec


def run_workflow(spec: dict[str, Any], topics: list[str]) -> tuple[float, dict[Any, Any], int]:
    """(seconds, outputs per topic, loaded models) for one batched run on a fresh pool."""
    from ift_engine import Workflow
    from ift_engine.models.resolve import ModelPool
    from ift_engine.plugins import components

    pool = ModelPool(components())
    wf = Workflow.from_dict(spec, source="article+title", pool=pool)
    wf.runner(cache=False).load_models()
    started = time.perf_counter()
    records = [{"id": i, "topic": t} for i, t in enumerate(topics)]
    results = {r.id: dict(r.outputs) for r in wf.run_many(records, batch_size=len(topics), cache=False)}
    seconds = time.perf_counter() - started
    loaded = len(pool._workers)
    pool.close()
    return seconds, results, loaded


CHILD = """
import json, sys
from ift_engine.models.base import GenerationSettings
from ift_engine.models.resolve import ModelPool, ModelSpec
from ift_engine.plugins import components
import torch, transformers, onnxruntime_genai

def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024

pool = ModelPool(components())
before = rss()
for spec in json.loads(sys.argv[1]):
    # Two tokens each: every weight is read once, so memory-mapped weights count as resident.
    pool.get(ModelSpec.model_validate(spec)).generate([[{"role": "user", "content": "Hi"}]], GenerationSettings(max_new_tokens=2))
print(rss() - before)
"""


def resident_mb(models: list[Any], backend: str | None) -> float:
    """Resident memory (MB) a fresh process gains loading ``models`` and running each once (its
    own process, so one measurement does not hold the other's memory)."""
    specs = [{"name": m} if isinstance(m, str) else dict(m) for m in models]
    specs = [{**spec, "backend": backend} if backend else spec for spec in specs]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(specs)], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def exports(
    adapters: list[Path], merged: list[Path], work: Path
) -> tuple[list[Path], list[Path], dict[str, Any]]:
    """`ift export` of each merged model and of each adapter (the base once, in the cache)."""
    from ift_engine.onnx.export import export_model

    merged_out, adapter_out, parity = [], [], {}
    for seed, adapter, full in zip(SEEDS, adapters, merged):
        export_model(full, work / f"merged{seed}-onnx")
        manifest = export_model(adapter, work / f"adapter{seed}-onnx")
        parity[f"adapter{seed}"] = manifest["parity"]["fp32"]
        merged_out.append(work / f"merged{seed}-onnx")
        adapter_out.append(work / f"adapter{seed}-onnx")
    return merged_out, adapter_out, parity


def same(a: dict[Any, Any], b: dict[Any, Any]) -> int:
    return sum(a[key] == b.get(key) for key in a)


def measure(
    args: argparse.Namespace, base_folder: Path, work: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    adapters, merged = make_models(base_folder, work)
    topics = (TOPICS * 4)[: args.topics]
    tokens = 8 if args.quick else None
    on_adapters = [{"base": str(base_folder), "adapter": str(a)} for a in adapters]
    variants = [("PyTorch", "three merged models", [str(m) for m in merged], None, merged)]
    variants.append(("PyTorch", "one base + three adapters", on_adapters, None, [base_folder, *adapters]))
    data: dict[str, Any] = {}
    if not args.no_onnx:
        merged_onnx, adapter_onnx, data["parity"] = exports(adapters, merged, work)
        base_export = Path(
            json.loads((adapter_onnx[0] / "ift_model.json").read_text())["adapter"]["base_export"]
        )
        variants.append(
            ("ONNX fp32", "three merged exports", [str(m) for m in merged_onnx], "onnx", merged_onnx)
        )
        adapter_specs = [str(a) for a in adapter_onnx]
        variants.append(
            (
                "ONNX fp32",
                "one base export + three adapters",
                adapter_specs,
                "onnx",
                [base_export, *adapter_onnx],
            )
        )
    rows, outputs = [], {}
    for runtime, label, models, backend, folders in variants:
        seconds, results, loaded = run_workflow(article(models, backend, tokens), topics)
        reference = outputs.setdefault(runtime, results)
        rows.append(
            {
                "runtime": runtime,
                "models": label,
                "loaded": loaded,
                "rss": resident_mb(models, backend),
                "disk": folder_bytes(*folders) / 1e6,
                "seconds": seconds,
                "topics_per_s": len(topics) / seconds,
                "same": f"{same(results, reference)}/{len(topics)}",
            }
        )
        print(rows[-1], flush=True)
    data["topics"] = len(topics)
    return rows, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=16)
    parser.add_argument("--base", default=BASE, help="the base model (alias or folder)")
    parser.add_argument(
        "--quick", action="store_true", help="2 topics, 8 tokens per node: a check that it runs"
    )
    parser.add_argument("--no-onnx", action="store_true", help="PyTorch only")
    args = parser.parse_args()
    args.topics = 2 if args.quick else args.topics
    machine = describe_machine()
    from ift_engine.models.resolve import ModelPool, ModelSpec
    from ift_engine.plugins import components

    base_folder = Path(ModelPool(components()).locate(ModelSpec(name=args.base)))  # converted once
    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as folder:
        work = Path(folder)
        os.environ["IFT_ENGINE_HOME"] = str(work / "home")  # exports made here are counted
        rows, data = measure(args, base_folder, work)
    columns = [
        ("runtime", "runtime"),
        ("models", "models"),
        ("loaded", "models loaded"),
        ("rss", "resident MB"),
        ("disk", "disk MB"),
        ("seconds", "workflow s"),
        ("topics_per_s", "topics/s"),
        ("same", "same outputs as the merged"),
    ]
    table = markdown_table(rows, columns)
    print(table)
    summary = [
        "disk: the model files (merged: three folders; adapters: the base once plus three adapter folders); "
        "resident: what a fresh process gains loading the three models and running each for two tokens",
        "same outputs: topics whose outline, article and title equal those of the three merged models on "
        "the same runtime",
    ]
    for name, parity in data.get("parity", {}).items():
        summary.append(
            f"{name} ONNX parity against its merged PyTorch model: max |logit diff| "
            f"{parity['max_abs_logit_diff']:.2g}, greedy agreement {parity['greedy_agreement']:.3g}"
        )
    kind = "gpu" if machine["gpu"] else "cpu"
    save_results(
        RESULTS / f"adapters-{kind}{'-quick' if args.quick else ''}",
        "Three subtask models: merged copies or one base plus LoRA adapters",
        f"{args.base}, workflows/article.yaml plus a title node, one model per node, {data['topics']} topics "
        "batched, greedy, answer cache off, one run. Adapters: random LoRA weights (r 8, q/k/v/o).",
        table,
        summary,
        machine,
        {"rows": rows, **data},
    )


if __name__ == "__main__":
    main()
