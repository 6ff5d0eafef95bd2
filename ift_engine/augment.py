"""Input-text augmentation: the four EDA operations (Wei & Zou, 2019) and character noise.

Text is split into words (jieba for Chinese, whitespace for other languages); numbers,
placeholders and code-like tokens are protected and never changed. Every operation draws its
randomness from the ``random.Random`` it is given, so a seed fixes the output.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from .errors import IftError

CJK = re.compile(r"[\u4e00-\u9fff]")
# Numbers, {placeholders}, $vars, URLs, paths, snake_case / camelCase / dotted identifiers, calls.
PROTECTED = re.compile(
    r"^(\d+([.,:/-]\d+)*%?|\{.*\}|\$\w+|https?://\S+|\S*[/\\]\S*|\w+_\w+|[a-z]+[A-Z]\w*|\w+\.\w+|\w+\(.*\))$"
)
PUNCTUATION = re.compile(r"^\W+$")


def is_chinese(text: str) -> bool:
    return bool(CJK.search(text))


def split_words(text: str) -> list[str]:
    """Words of ``text``: jieba segments for Chinese, whitespace-separated words otherwise."""
    if is_chinese(text):
        import jieba

        return [w for w in jieba.lcut(text) if w.strip()]
    return text.split()


def join_words(words: Sequence[str], chinese: bool) -> str:
    return "".join(words) if chinese else " ".join(words)


def editable(word: str) -> bool:
    return not PROTECTED.match(word) and not PUNCTUATION.match(word)


@dataclass(frozen=True)
class Lexicon:
    """Synonyms by word. Registered through ``register_lexicons``; larger ones come as plugins."""

    name: str
    language: str
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Make the relation symmetric: if a lists b, b lists a (and the others a lists).
        groups: dict[str, set[str]] = {}
        for word, others in self.synonyms.items():
            for w in (word, *others):
                groups.setdefault(w, set()).update({word, *others})
        object.__setattr__(
            self, "synonyms", {w: tuple(sorted(g - {w})) for w, g in groups.items() if g - {w}}
        )

    def of(self, word: str) -> tuple[str, ...]:
        return self.synonyms.get(word, ())


class RateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: float = Field(0.1, ge=0.0, le=1.0, description="share of words (or characters) changed")


class Augmenter(ABC):
    """A word-level rewrite of training input text (never of the target).

    Subclasses set ``name`` and ``options_model`` and implement ``apply``; the registry holds
    the classes, and a training file configures them by name with options.
    """

    name: ClassVar[str]
    options_model: ClassVar[type[BaseModel]] = RateOptions

    def __init__(self, options: Any, components: Any = None) -> None:
        self.options = options

    @abstractmethod
    def apply(self, words: list[str], rng: random.Random, chinese: bool) -> list[str]:
        """Return rewritten ``words``; leave protected words (see ``editable``) as they are."""

    def augment(self, text: str, rng: random.Random) -> str:
        chinese = is_chinese(text)
        return join_words(self.apply(split_words(text), rng, chinese), chinese)

    def _count(self, words: Sequence[str]) -> int:
        return max(1, round(self.options.rate * len(words))) if self.options.rate > 0 else 0


class SynonymOptions(RateOptions):
    lexicon: str | None = Field(None, description="registered lexicon; default: by text language")


class SynonymReplacement(Augmenter):
    """Replace up to rate x n words that have synonyms with a random synonym."""

    name = "synonym_replacement"
    options_model = SynonymOptions

    def __init__(self, options: SynonymOptions, components: Any = None) -> None:
        super().__init__(options)
        lexicons = components.lexicons if components is not None else None
        if lexicons is None or (options.lexicon and options.lexicon not in lexicons):
            known = lexicons.known() if lexicons is not None else "none"
            raise IftError(f"synonym_replacement: unknown lexicon '{options.lexicon}' (known: {known})")
        self._lexicons = {name: lexicons.get(name) for name in lexicons.names()}

    def lexicon_for(self, chinese: bool) -> Lexicon | None:
        if self.options.lexicon:
            return self._lexicons[self.options.lexicon]
        language = "zh" if chinese else "en"
        return next((lx for lx in self._lexicons.values() if lx.language == language), None)

    def apply(self, words: list[str], rng: random.Random, chinese: bool) -> list[str]:
        lexicon = self.lexicon_for(chinese)
        if lexicon is None:
            return words
        key = (lambda w: w) if chinese else str.lower
        candidates = [i for i, w in enumerate(words) if editable(w) and lexicon.of(key(w))]
        rng.shuffle(candidates)
        out = list(words)
        for i in candidates[: self._count(words)]:
            out[i] = rng.choice(lexicon.of(key(out[i])))
        return out


class RandomInsertion(Augmenter):
    """Insert a copy of a random editable word at a random position, rate x n times (the EDA
    paper inserts synonyms; copying keeps it language-neutral without a lexicon)."""

    name = "random_insertion"

    def apply(self, words: list[str], rng: random.Random, chinese: bool) -> list[str]:
        pool = [w for w in words if editable(w)]
        out = list(words)
        for _ in range(self._count(words) if pool else 0):
            out.insert(rng.randrange(len(out) + 1), rng.choice(pool))
        return out


class RandomSwap(Augmenter):
    """Swap two editable words, rate x n times."""

    name = "random_swap"

    def apply(self, words: list[str], rng: random.Random, chinese: bool) -> list[str]:
        out = list(words)
        positions = [i for i, w in enumerate(out) if editable(w)]
        for _ in range(self._count(words) if len(positions) > 1 else 0):
            a, b = rng.sample(positions, 2)
            out[a], out[b] = out[b], out[a]
        return out


class RandomDeletion(Augmenter):
    """Delete each editable word with probability ``rate``, never all of them."""

    name = "random_deletion"

    def apply(self, words: list[str], rng: random.Random, chinese: bool) -> list[str]:
        kept = [w for w in words if not editable(w) or rng.random() >= self.options.rate]
        return kept if any(editable(w) for w in kept) or not words else list(words)


class CharacterNoise(Augmenter):
    """Typo-like noise inside editable words: drop, repeat or swap neighbouring characters."""

    name = "char_noise"

    def apply(self, words: list[str], rng: random.Random, chinese: bool) -> list[str]:
        out = []
        for word in words:
            chars = list(word)
            if editable(word) and len(chars) > 1 and rng.random() < self.options.rate:
                i = rng.randrange(len(chars) - 1)
                kind = rng.randrange(3)
                if kind == 0:
                    del chars[i]
                elif kind == 1:
                    chars.insert(i, chars[i])
                else:
                    chars[i], chars[i + 1] = chars[i + 1], chars[i]
            out.append("".join(chars))
        return out
