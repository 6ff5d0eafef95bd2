"""Which instructions an evaluation asks with: a template's paraphrases and held-out ones."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import EvalError, IftError
from ..templates import InstructionTemplate
from .results import Paraphrase


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
