"""A learning curve for IFT against TF-IDF + LR, on three disjoint held-out samples, and what
label-wording augmentation does to unseen instructions. Every figure comes from the engine's
evaluation (``ift_engine.evaluation``, what ``ift eval`` runs).

    python examples/sentiment_zh/curve.py        # about 3 hours on a 2-core CPU (resumable)

- Held out: 900 short reviews (8-50 characters), balanced, in three disjoint samples of 300.
  No training set holds any of them. Accuracy is given per sample and pooled (95% Wilson
  intervals), and every paired comparison is an exact McNemar test over the 900.
- Training sets: the first 500, 1,000, 2,000 and 4,000 reviews of one balanced, shuffled pool
  (each holds the smaller ones), the same for TF-IDF + LR and for IFT.
- IFT: SmolLM2-135M-Instruct, LoRA, at least 3,000 examples seen (6 passes over 500 reviews,
  3 over 1,000, 1.5 over 2,000, one over 4,000). The records are split in three: the sentiment-zh
  paraphrases, the zh plugin's sentiment-zh-extra, and 24 paraphrases generated here that name
  the labels in other words (好评/差评, 积极/消极, ...) and say which answer each maps to. The
  ablation at 2,000 trains on the same records with the first two only.
- Instructions: 3 seen in training by both IFT models, 8 that no run trained on (5 in the
  style a user types, 3 with label words no training paraphrase uses), each asked on 200
  reviews of the first sample.

Writes curve.json (after every step: a second start goes on where the first stopped), CURVE.md
and learning_curve.png here; ``--report`` redraws the report only.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from run import LORA, UNSEEN, bf16_args, tfidf_logistic
from split import balanced

from ift_engine import train
from ift_engine.evaluation import EvalModel, Evaluation, Item, evaluate, paraphrase_set, trained_texts
from ift_engine.evaluation.stats import mcnemar
from ift_engine.models.base import GenerationSettings
from ift_engine.models.resolve import ModelPool, ModelSpec
from ift_engine.models.worker import ModelWorker
from ift_engine.plugins import components
from ift_engine.sources import SnowNLPOptions, SnowNLPSentiment
from ift_engine.templates import AnswerForm, InstructionTemplate

HERE = Path(__file__).parent
LABELS = ("正面", "负面")
SIZES = (500, 1000, 2000, 4000)
SAMPLES, SAMPLE_SIZE = 3, 300
#: Reviews every instruction is asked on, for the seen and unseen comparison.
ROBUST = 200
TRAINING = {"learning_rate": 1e-3, "batch_size": 8, "max_length": 160}
#: Every run sees at least this many examples (375 steps): the smaller sets are repeated. One
#: pass over 500 reviews (63 steps) learns the answer format but not the sentiment (it
#: answers 负面 to everything: 0.500).
MIN_SEEN = 3000
#: Label words other than the trained answers, and sentences that ask with them.
WORDINGS = [
    ("好评", "差评"),
    ("积极", "消极"),
    ("褒义", "贬义"),
    ("满意", "不满意"),
    ("推荐", "不推荐"),
    ("喜欢", "讨厌"),
]
FRAMES = [
    "这条评论是{a}还是{b}？{a}回答正面，{b}回答负面。\n{{text}}",
    "{{text}}\n评论者的态度是{a}还是{b}？（{a}=正面，{b}=负面）",
    "请判断下面的评价属于{a}还是{b}，并用正面或负面作答：{{text}}",
    "评论：{{text}}\n问题：{a}还是{b}？答案（正面/负面）：",
]
WORDING = {
    "name": "sentiment-zh-wording",
    "task": "sentiment",
    "language": "zh",
    "answer": "label",
    "labels": list(LABELS),
    "paraphrases": [frame.format(a=a, b=b) for a, b in WORDINGS for frame in FRAMES],
}
#: Label words that no training paraphrase uses.
NOVEL_WORDING = [
    "{text}\n用户对商品是认可还是失望？认可答正面，失望答负面。",
    "这是一条正向评论还是负向评论？正向答正面，负向答负面。\n{text}",
    "读完这条留言，你觉得作者开心还是不开心？回答正面或负面。\n{text}",
]
#: Seen by both IFT runs: sentiment-zh p0 and p3, sentiment-zh-extra p1.
SEEN = [("sentiment-zh", 0), ("sentiment-zh", 3), ("sentiment-zh-extra", 1)]
REVIEW_ONLY = InstructionTemplate(
    name="review",
    task="sentiment",
    paraphrases=("{text}",),
    variables=("text",),
    answer=AnswerForm.LABEL,
    labels=LABELS,
)


def splits(seed: int = 0) -> tuple[list[list[dict]], list[dict]]:
    """Three disjoint balanced held-out samples, and the balanced training pool (shuffled)."""
    records = [r for r in SnowNLPSentiment.records(SnowNLPOptions()) if 8 <= len(r["text"]) <= 50]
    unique = list({r["text"]: r for r in records}.values())  # a review twice would sit on both sides
    random.Random(seed).shuffle(unique)
    per_label = SAMPLE_SIZE // 2
    by_label = {label: [r for r in unique if r["output"] == label] for label in LABELS}
    samples = [
        [r for label in LABELS for r in by_label[label][k * per_label : (k + 1) * per_label]]
        for k in range(SAMPLES)
    ]
    held = {r["text"] for sample in samples for r in sample}
    pool = balanced([r for r in unique if r["text"] not in held], max(SIZES))
    return samples, pool


def fine_tune(records: list[dict], output: Path, wording: bool) -> dict[str, Any]:
    """LoRA IFT on ``records``: in thirds over three paraphrase packs (``wording``), or in
    halves over the first two."""
    packs = ["sentiment-zh", "sentiment-zh-extra"] + (["sentiment-zh-wording"] if wording else [])
    share = len(records) // len(packs)
    datasets = [
        {"records": records[i * share : (i + 1) * share if i < len(packs) - 1 else None], "template": name}
        for i, name in enumerate(packs)
    ]
    started = time.perf_counter()
    result = train(
        base_model="smollm2-135m-instruct",
        output=str(output),
        datasets=datasets,
        templates=[WORDING] if wording else [],
        eval={"split": 0},
        seed=0,
        training={
            **TRAINING,
            "epochs": epochs(len(records)),
            "logging_steps": 10,
            "save_steps": 1000,
            "lora": LORA,
            "args": bf16_args(),
        },
        overwrite=True,
    )
    return {"folder": str(result.output), "minutes": (time.perf_counter() - started) / 60}


def epochs(size: int) -> float:
    return max(1.0, MIN_SEEN / size)


def items_of(records: list[dict]) -> list[Item]:
    return [Item({"text": r["text"]}, r["output"]) for r in records]


def asked(
    model: EvalModel, template: InstructionTemplate, items: list[Item], paraphrases: Any, held_out: list[str]
) -> Evaluation:
    chosen = paraphrase_set(template, paraphrases, held_out)
    return evaluate(template, chosen, items, [model], GenerationSettings(max_new_tokens=8))


def result_json(evaluation: Evaluation) -> dict[str, Any]:
    """The evaluation's JSON, with each paraphrase's answers right or wrong kept for pairing."""
    data = evaluation.to_json()
    for entry, result in zip(data["models"][0]["paraphrases"], evaluation.models[0].paraphrases):
        entry["correct"] = result.correct
    return data


def tfidf_step(pool: list[dict], items: list[Item], size: int) -> dict[str, Any]:
    classifier = tfidf_logistic(pool[:size])
    worker = ModelWorker(classifier)
    try:
        return result_json(asked(EvalModel(f"tfidf-{size}", worker), REVIEW_ONLY, items, "all", []))
    finally:
        worker.close()


def ift_model(models: ModelPool, folder: str) -> EvalModel:
    return EvalModel(Path(folder).name, models.worker(ModelSpec(name=folder)), trained_texts(folder))


def seen_and_unseen() -> tuple[InstructionTemplate, list[int], list[str]]:
    """sentiment-zh p0 and p3 as the template's own, the other seen one and every unseen one
    as held-out texts (ift eval marks the seen ones from the model's manifest)."""
    templates = components().templates
    extra = templates.get("sentiment-zh-extra").paraphrases[SEEN[2][1]]
    return (
        templates.get("sentiment-zh"),
        [SEEN[0][1], SEEN[1][1]],
        [extra, *UNSEEN.paraphrases, *NOVEL_WORDING],
    )


def experiment(runs: Path, results: dict[str, Any], save: Callable[[], None]) -> None:
    samples, pool = splits()
    held = [r for sample in samples for r in sample]
    assert not {r["text"] for r in pool} & {r["text"] for r in held}, "a held-out review is in the pool"
    items = items_of(held)
    results.setdefault("tfidf", {})
    for size in SIZES:
        if str(size) not in results["tfidf"]:
            results["tfidf"][str(size)] = tfidf_step(pool, items, size)
            save()
    template, own, held_out = seen_and_unseen()
    half = ROBUST // 2  # a balanced part of the first sample (its positives come first)
    robust_items = items_of(samples[0][:half] + samples[0][SAMPLE_SIZE // 2 : SAMPLE_SIZE // 2 + half])
    results.setdefault("ift", {})
    # Both goals' figures first (2,000 with and without the wordings), the rest of the curve after.
    plan = [(2000, True), (2000, False), (4000, True), (500, True), (1000, True)]
    for size, wording in plan:
        key = f"{size}{'' if wording else '-plain'}"
        entry = results["ift"].setdefault(key, {})
        folder = runs / f"ift-{key}"
        if "minutes" not in entry:
            print(
                f"fine-tuning on {size} reviews ({'with' if wording else 'without'} label wordings) ...",
                flush=True,
            )
            entry.update(fine_tune(pool[:size], folder, wording))
            save()
        models = ModelPool(components())
        try:
            model = ift_model(models, str(folder))
            if wording and "curve" not in entry:
                entry["curve"] = result_json(asked(model, template, items, [0], []))
                save()
            if size == 2000 and "paraphrases" not in entry:
                entry["paraphrases"] = result_json(asked(model, template, robust_items, own, held_out))
                save()
        finally:
            models.close()
        if "curve" in entry:
            print(summary_line(key, entry, results), flush=True)


def accuracy(evaluation: dict[str, Any], paraphrase: int = 0) -> float:
    row = evaluation["models"][0]["paraphrases"][paraphrase]
    return row["right"] / row["n"]


def correct(evaluation: dict[str, Any]) -> list[bool]:
    return evaluation["models"][0]["paraphrases"][0]["correct"]


def summary_line(key: str, entry: dict[str, Any], results: dict[str, Any]) -> str:
    size = key.split("-")[0]
    ift, tfidf = entry["curve"], results["tfidf"][size]
    test = mcnemar(correct(ift), correct(tfidf))
    return (
        f"{key}: IFT {accuracy(ift):.3f}, TF-IDF + LR {accuracy(tfidf):.3f}, McNemar p = {test.p_value:.3g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default=str(HERE / "runs"), help="where the fine-tuned models go")
    parser.add_argument("--report", action="store_true", help="only redraw CURVE.md and the plot")
    args = parser.parse_args()
    path = HERE / "curve.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results.update(
        {
            "sizes": list(SIZES),
            "samples": SAMPLES,
            "sample_size": SAMPLE_SIZE,
            "robust_reviews": ROBUST,
            "training": {**TRAINING, "epochs": {str(n): epochs(n) for n in SIZES}},
        }
    )

    def save() -> None:
        staged = path.with_suffix(".json.partial")
        staged.write_text(json.dumps(results, ensure_ascii=False))
        staged.replace(path)

    if not args.report:
        experiment(Path(args.runs), results, save)
    from curve_report import write_curve_report

    write_curve_report(results, HERE)


if __name__ == "__main__":
    main()
