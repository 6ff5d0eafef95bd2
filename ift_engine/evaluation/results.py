"""What ``ift eval`` found: per model and paraphrase, the scores; across paraphrases, their
spread; between models, paired tests. ``to_json`` is the ``--json`` output."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..paraphrases import Paraphrase
from .stats import McNemar, Spread


@dataclass
class ParaphraseResult:
    """One model's answers under one paraphrase: right or wrong per record (the label, or an
    exact match for text answers), the scores, the 95% Wilson interval of the share right,
    failed calls (counted wrong) and whether the model was trained on this instruction (None:
    not known)."""

    paraphrase: Paraphrase
    correct: list[bool]
    scores: dict[str, float]
    interval: tuple[float, float]
    failed: int = 0
    seen: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.paraphrase.id,
            **self.scores,
            "ci95": list(self.interval),
            "right": sum(self.correct),
            "n": len(self.correct),
            "failed": self.failed,
            "seen": self.seen,
        }


@dataclass
class GroupScore:
    """The paraphrases of one kind (seen in training, or not): how many, the mean of their
    scores, and the share right pooled over all their answers with its Wilson interval."""

    paraphrases: int
    mean: float
    pooled: float
    interval: tuple[float, float]


@dataclass
class ModelResult:
    name: str
    paraphrases: list[ParaphraseResult]
    summary: Spread
    seen: GroupScore | None = None
    unseen: GroupScore | None = None

    @property
    def drop(self) -> float | None:
        """Seen minus unseen mean score, when the model has both."""
        return None if self.seen is None or self.unseen is None else self.seen.mean - self.unseen.mean

    def to_json(self) -> dict[str, Any]:
        split = None
        if self.seen is not None or self.unseen is not None:
            split = {
                "seen": asdict(self.seen) if self.seen else None,
                "unseen": asdict(self.unseen) if self.unseen else None,
                "drop": self.drop,
            }
        return {
            "name": self.name,
            "paraphrases": [p.to_json() for p in self.paraphrases],
            "summary": asdict(self.summary),
            "seen_vs_unseen": split,
        }


@dataclass
class Comparison:
    """An exact McNemar test between two models over the same (record, paraphrase) pairs."""

    a: str
    b: str
    test: McNemar

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, **asdict(self.test)}


@dataclass
class Evaluation:
    """The whole evaluation. ``metric`` is the score summarised across paraphrases:
    ``accuracy`` for label answers, else the evaluation's ``rouge_l``, ``chrf`` or
    ``exact_match``."""

    template: str
    answer: str
    metric: str
    items: int
    paraphrases: list[Paraphrase]
    models: list[ModelResult]
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def scores(self) -> list[str]:
        return ["accuracy"] if self.metric == "accuracy" else ["exact_match", "rouge_l", "chrf"]

    def to_json(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "answer": self.answer,
            "metric": self.metric,
            "items": self.items,
            "paraphrases": [asdict(p) for p in self.paraphrases],
            "models": [m.to_json() for m in self.models],
            "comparisons": [c.to_json() for c in self.comparisons],
        }
