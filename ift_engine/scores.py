"""Scores of generated answers against references, from the reference implementations:
ROUGE-L from ``rouge-score`` and chrF from ``sacrebleu``.

rouge-score's own tokenizer keeps only ``[a-z0-9]`` and so drops Chinese text entirely; it is
given a tokenizer that splits Chinese into characters and other text into lowercased words.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from .augment import is_chinese


class _CharactersOrWords:
    """rouge-score's tokenizer interface: characters for Chinese text, lowercased words otherwise."""

    def tokenize(self, text: str) -> list[str]:
        if is_chinese(text):
            return [c for c in text if not c.isspace()]
        return text.lower().split()


@functools.cache
def _rouge_scorer() -> Any:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], tokenizer=_CharactersOrWords())


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of one answer: characters for Chinese, lowercased words otherwise."""
    return float(_rouge_scorer().score(reference, candidate)["rougeL"].fmeasure)


def mean_rouge_l(candidates: Sequence[str], references: Sequence[str]) -> float:
    if not candidates:
        return 0.0
    return sum(rouge_l(c, r) for c, r in zip(candidates, references)) / len(candidates)


def chrf(candidates: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu's defaults: character 6-grams, beta 2), on a 0-1 scale."""
    if not candidates:
        return 0.0
    from sacrebleu.metrics import CHRF

    return float(CHRF().corpus_score(list(candidates), [list(references)]).score) / 100


def exact_match(candidate: str, reference: str) -> bool:
    """The answer is the reference, surrounding white space aside."""
    return candidate.strip() == reference.strip()
