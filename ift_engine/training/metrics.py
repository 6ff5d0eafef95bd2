"""Evaluation measures: token accuracy, label accuracy by scoring, ROUGE-L (``scores``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..models.base import GenerationSettings, Model
from ..scores import mean_rouge_l as rouge_l_of
from .data import Example
from .tokenize import IGNORE


def token_accuracy(logits_argmax: Any, labels: Any) -> float:
    """Share of answer tokens predicted exactly (next-token argmax against the labels)."""
    predictions, targets = logits_argmax[:, :-1], labels[:, 1:]
    mask = targets != IGNORE
    return float((predictions[mask] == targets[mask]).mean()) if mask.any() else 0.0


def label_accuracy(model: Model, examples: Sequence[Example]) -> float:
    """Accuracy of picking the right label by the model's label probabilities."""
    if not examples:
        return 0.0
    rows = model.classify([list(e.prompt) for e in examples], examples[0].labels)
    right = sum(
        e.labels[max(range(len(row)), key=row.__getitem__)] == e.completion for e, row in zip(examples, rows)
    )
    return right / len(examples)


def mean_rouge_l(model: Model, examples: Sequence[Example], max_new_tokens: int = 128) -> float:
    if not examples:
        return 0.0
    answers = model.generate(
        [list(e.prompt) for e in examples], GenerationSettings(max_new_tokens=max_new_tokens)
    )
    return rouge_l_of(answers, [e.completion for e in examples])


def task_metrics(model: Model, examples: Sequence[Example], max_generate: int) -> dict[str, float]:
    """Per task: accuracy for label tasks (all eval examples), ROUGE-L for free text
    (the first ``max_generate`` eval examples, since generation is slow)."""
    by_task: dict[str, list[Example]] = {}
    for example in examples:
        if not example.language_model:  # plain text has no answer to score: its eval loss says it
            by_task.setdefault(example.task or "free_text", []).append(example)
    results = {}
    for task, items in by_task.items():
        if items[0].labels:
            results[f"{task}_accuracy"] = label_accuracy(model, items)
        else:
            results[f"{task}_rouge_l"] = mean_rouge_l(model, items[:max_generate])
    return results
