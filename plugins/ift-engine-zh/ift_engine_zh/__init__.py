"""Chinese support for ift_engine.

- Lexicons: ``zh-extended`` (a larger hand-checked synonym list for review text), and
  ``zh-cilin`` when ``IFT_ENGINE_ZH_CILIN`` points to a 同义词词林 (Cilin) file, whose ``=``
  groups are synonym sets; ``load_cilin`` reads one.
- Templates: ``sentiment-zh-extra`` (five more sentiment paraphrases), ``keywords-zh``,
  ``title-zh``.
- ``rouge_zh``: ROUGE-1, ROUGE-2 and ROUGE-L F1 for Chinese summaries, over characters or over
  jieba words.
"""

from __future__ import annotations

import os
from collections import Counter
from importlib.resources import files
from pathlib import Path

import yaml

from ift_engine.plugin import InstructionTemplate, Lexicon, hookimpl, rouge_l

__version__ = "0.1.0"


def load_word_lists(text: str, name: str) -> Lexicon:
    """One synonym group per line, words separated by spaces; ``#`` starts a comment."""
    synonyms = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) > 1:
            synonyms[words[0]] = tuple(words[1:])
    return Lexicon(name, "zh", synonyms)


def load_cilin(path: str | Path, name: str = "zh-cilin") -> Lexicon:
    """A Cilin file: lines like ``Aa01A01= 人 士 人物``; only ``=`` lines are synonym sets
    (``#`` marks related words, ``@`` a lone word)."""
    synonyms = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        code, _, rest = line.partition(" ")
        words = rest.split()
        if code.endswith("=") and len(words) > 1:
            synonyms.setdefault(words[0], ())
            synonyms[words[0]] = tuple(dict.fromkeys(synonyms[words[0]] + tuple(words[1:])))
    return Lexicon(name, "zh", synonyms)


@hookimpl
def register_lexicons(register):
    register(
        load_word_lists(
            files(__package__).joinpath("zh-extended.txt").read_text(encoding="utf-8"), "zh-extended"
        )
    )
    cilin = os.environ.get("IFT_ENGINE_ZH_CILIN")
    if cilin:
        register(load_cilin(cilin))


@hookimpl
def register_templates(register):
    for entry in yaml.safe_load(files(__package__).joinpath("templates.yaml").read_text(encoding="utf-8")):
        register(InstructionTemplate(**entry))


def _ngrams(units: list[str], n: int) -> Counter:
    return Counter(tuple(units[i : i + n]) for i in range(len(units) - n + 1))


def _f1(overlap: int, candidate: int, reference: int) -> float:
    if not overlap:
        return 0.0
    precision, recall = overlap / candidate, overlap / reference
    return 2 * precision * recall / (precision + recall)


def rouge_zh(candidate: str, reference: str, unit: str = "char") -> dict[str, float]:
    """ROUGE-1/2/L F1 of a Chinese summary against a reference, over characters (``unit="char"``,
    the usual choice for Chinese) or jieba words (``unit="word"``). Punctuation and spaces are
    ignored."""
    if unit == "word":
        import jieba

        split = lambda t: [w for w in jieba.lcut(t) if w.strip() and any(c.isalnum() for c in w)]  # noqa: E731
    else:
        split = lambda t: [c for c in t if c.isalnum()]  # noqa: E731
    a, b = split(candidate), split(reference)
    scores = {}
    for n in (1, 2):
        ca, cb = _ngrams(a, n), _ngrams(b, n)
        scores[f"rouge{n}"] = _f1(sum((ca & cb).values()), max(sum(ca.values()), 1), max(sum(cb.values()), 1))
    if unit == "word":  # each word as one ASCII token, so the LCS runs over words, not characters
        token = {w: f"w{i}" for i, w in enumerate(dict.fromkeys(a + b))}
        scores["rougeL"] = rouge_l(" ".join(token[w] for w in a), " ".join(token[w] for w in b))
    else:
        scores["rougeL"] = rouge_l("".join(a), "".join(b))
    return scores
