"""Which instructions a model is asked with: a template's paraphrases and held-out ones (what
``ift eval`` asks, and what a training file's ``eval:`` checks before training)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from .documents import load_yaml_file
from .errors import EvalError, IftError
from .records import MAX_COUNT
from .templates import InstructionTemplate


def _all_or_indices(value: Any) -> Any:
    if value == "all" or (
        isinstance(value, list)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT for v in value)
    ):
        return value
    raise ValueError(f"{value!r}: give all, or a list of paraphrase indices such as [0, 2]")


#: ``all`` or paraphrase indices: which of a template's paraphrases to evaluate with.
ParaphraseChoice = Annotated[Literal["all"] | list[int], BeforeValidator(_all_or_indices)]


@dataclass(frozen=True)
class Paraphrase:
    """One instruction asked: ``p3`` is the template's paraphrase 3, ``h0`` the first held-out one."""

    id: str
    text: str
    held_out: bool


def paraphrase_set(
    template: InstructionTemplate,
    chosen: str | Sequence[int],
    held_out: Sequence[str],
    field: str = "paraphrases",
) -> list[Paraphrase]:
    """The template's chosen paraphrases (``all`` or indices), then the held-out ones, each
    linted as a template's paraphrase is."""
    indices = range(len(template.paraphrases)) if isinstance(chosen, str) else list(chosen)
    try:
        found = [Paraphrase(f"p{i}", template.paraphrases[template.pick(i)], False) for i in indices]
    except IftError as exc:
        raise EvalError(f"{field}: {exc}") from None
    if held_out:
        try:
            InstructionTemplate(
                name=f"{template.name} (held out)",
                task=template.task,
                paraphrases=tuple(held_out),
                variables=template.variables,
                answer=template.answer,
                labels=template.labels,
            )
        except IftError as exc:
            raise EvalError(f"held_out: {exc}") from None
    return found + [Paraphrase(f"h{i}", text, True) for i, text in enumerate(held_out)]


def read_held_out(value: list[str] | str | None, field: str = "held_out") -> list[str]:
    """Held-out paraphrases written inline, or read from a YAML file: a list of strings, or a
    mapping with such a list under ``paraphrases``."""
    if value is None or isinstance(value, list):
        return list(value or [])
    data = load_yaml_file(Path(value), "held-out paraphrases file", EvalError)
    if isinstance(data, dict):
        data = data.get("paraphrases")
    if not isinstance(data, list) or not data or not all(isinstance(t, str) and t for t in data):
        raise EvalError(
            f"{value} ({field}): must hold a list of paraphrases (strings), or one under 'paraphrases:'"
        )
    return data
