"""Free-text ensembles: token_average and rerank of the base and the tuned SmolLM2.

    python examples/sentiment_zh/run.py    # first: the tuned SmolLM2 (and the label ensembles)
    python examples/ensemble_zh/run.py     # a few minutes on a 2-core CPU

On a small free-text task (capital cities, answers checked against the reference): the base
SmolLM2, the sentiment-tuned one (examples/sentiment_zh/runs/ift), their token-level average and
a rerank of their answers. The label ensembles (IFT + MiniLM + SnowNLP) are part of the
sentiment experiment, on its held-out split. Writes examples/ensemble_zh/results.json and REPORT.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from ift_engine import GenerationSettings, Model
from ift_engine.ensemble import Rerank, TokenAverage
from ift_engine.models.hf_causal import CausalLMOptions, HFCausalLM
from ift_engine.models.resolve import ModelPool, ModelSpec
from ift_engine.plugins import components

HERE = Path(__file__).parent
IFT = HERE.parent / "sentiment_zh" / "runs" / "ift"
CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Germany": "Berlin",
    "Spain": "Madrid",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Russia": "Moscow",
    "China": "Beijing",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Ireland": "Dublin",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Poland": "Warsaw",
    "Austria": "Vienna",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Cuba": "Havana",
    "Thailand": "Bangkok",
    "Argentina": "Buenos Aires",
    "Australia": "Canberra",
    "India": "New Delhi",
    "Mexico": "Mexico City",
}


def prompts_for(test: list[dict]) -> list[list[dict[str, str]]]:
    template = components().templates.get("sentiment-zh")
    return [list(template.render({"text": r["text"]}, paraphrase=0).messages) for r in test]


def capital_accuracy(model: Model, settings: GenerationSettings) -> tuple[float, float]:
    prompts = [
        [{"role": "user", "content": f"What is the capital of {country}? Answer with the city name."}]
        for country in CAPITALS
    ]
    start = time.perf_counter()
    answers = model.generate(prompts, settings)
    seconds = time.perf_counter() - start
    right = sum(city.lower() in answer.lower() for city, answer in zip(CAPITALS.values(), answers))
    return right / len(CAPITALS), seconds


def main() -> None:
    if not IFT.exists():
        sys.exit(f"{IFT} is missing: run examples/sentiment_zh/run.py first")
    print("free text: token_average and rerank ...", flush=True)
    base_folder = ModelPool(components()).locate(ModelSpec(name="smollm2-135m-instruct"))
    base = HFCausalLM.load("base", base_folder, CausalLMOptions(device="cpu"))
    ift = HFCausalLM.load("ift", str(IFT), CausalLMOptions(device="cpu", batch_size=16))
    settings = GenerationSettings(max_new_tokens=12)
    free_text = {}
    for name, model in (
        ("base SmolLM2", base),
        ("IFT SmolLM2", ift),
        ("token_average", TokenAverage([base, ift]).model("avg")),
        ("rerank", Rerank([base, ift]).model("rerank")),
    ):
        acc, seconds = capital_accuracy(model, settings)
        free_text[name] = {"accuracy": acc, "seconds": seconds}
        print(name, free_text[name], flush=True)
    results = {"free_text": free_text}
    (HERE / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    write_report(results)


def write_report(results: dict[str, Any]) -> None:
    lines = [
        "# Free-text ensembles",
        "",
        "24 capital-city questions; an answer counts when it names the city. Members: the base",
        "SmolLM2-135M-Instruct and the sentiment-tuned one from",
        "[the IFT experiment](../sentiment_zh/REPORT.md), which also holds the label ensembles.",
        "",
        "| model | accuracy | seconds |",
        "|---|---|---|",
        *[f"| {n} | {v['accuracy']:.3f} | {v['seconds']:.1f} |" for n, v in results["free_text"].items()],
        "",
        "Reproduce: `python examples/sentiment_zh/run.py && python examples/ensemble_zh/run.py`.",
    ]
    (HERE / "REPORT.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
