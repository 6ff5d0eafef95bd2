"""The statistics of ``ift eval``: intervals, paired tests, and summaries across paraphrases.

The combined performance score follows Mizrahi et al., "State of What Art? A Call for
Multi-Prompt LLM Evaluation" (TACL 2024): with MaxP the best and AvgP the mean score over a
task's instruction paraphrases, saturation is ``1 - (MaxP - AvgP)`` and
``CPS = saturation * MaxP``. It rewards a high peak and penalises the distance of the average
from it, so a model that needs one lucky phrasing scores lower than one that is good under all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def wilson_interval(right: int, total: int) -> tuple[float, float]:
    """The 95% Wilson score interval of ``right`` successes out of ``total`` (scipy)."""
    if total == 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest

    interval = binomtest(right, total).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(interval.low), float(interval.high))


@dataclass(frozen=True)
class McNemar:
    """An exact McNemar test on paired right/wrong outcomes: ``only_a`` pairs where A alone is
    right, ``only_b`` where B alone is, and the two-sided p-value (a binomial test of the
    discordant pairs against an even split; 1.0 when there are none)."""

    only_a: int
    only_b: int
    p_value: float


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    if len(a) != len(b):
        raise ValueError(f"paired outcomes of different lengths ({len(a)} and {len(b)})")
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    if only_a + only_b == 0:
        return McNemar(0, 0, 1.0)
    from scipy.stats import binomtest

    return McNemar(only_a, only_b, float(binomtest(only_a, only_a + only_b, 0.5).pvalue))


def combined_performance_score(scores: Sequence[float]) -> float:
    """Mizrahi et al.'s CPS of one model's scores over paraphrases (see the module docstring)."""
    best, mean = max(scores), sum(scores) / len(scores)
    return (1 - (best - mean)) * best


@dataclass(frozen=True)
class Spread:
    """One model's scores across paraphrases: mean, best, worst, max - min, the population
    standard deviation (of these paraphrases themselves, not an estimate for others), CPS."""

    mean: float
    best: float
    worst: float
    spread: float
    std: float
    cps: float

    @classmethod
    def of(cls, scores: Sequence[float]) -> Spread:
        if not scores:
            raise ValueError("no scores to summarise")
        mean = sum(scores) / len(scores)
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        best, worst = max(scores), min(scores)
        return cls(mean, best, worst, best - worst, std, combined_performance_score(scores))
