"""Generation one decode step at a time: the rows of a running batch, and how each step's
token is chosen.

A backend that batches continuously (``BatchesContinuously``) turns prompts into a ``Cohort``:
rows decoded together, one token per row per ``step()``. The model's worker keeps cohorts
running, starts the prompts that wait in a new cohort whenever it is free (merged into a running
one where the backend can), and ends a row as soon as it finishes, is cancelled or passes its
deadline. ``generate`` on such a backend is the same machinery run to the end
(``decode_to_end``), so one-at-a-time, batched and streamed answers share one code path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .base import GenerationSettings, Prompt, TextSink

if TYPE_CHECKING:
    from ..structured import Constraint

log = logging.getLogger(__name__)


class Row:
    """One prompt being answered: its settings, its answer tokens so far, and where its text
    goes while it grows (``on_text(new text)``). ``finish`` is None while it runs, then
    ``"stop"`` (an end-of-turn token, or its ``constraint``'s grammar complete) or ``"length"``
    (``max_new_tokens`` reached). A constrained row's ``matcher`` (``guidance.py``) is set by
    the cohort it starts in. ``adapter`` names the LoRA adapter the row is decoded with (None:
    the bare model; see ``adapters.py``)."""

    def __init__(
        self,
        prompt: Prompt,
        settings: GenerationSettings,
        on_text: Callable[[str], None] | None = None,
        constraint: Constraint | None = None,
        adapter: str | None = None,
    ) -> None:
        self.prompt, self.settings, self.on_text = prompt, settings, on_text
        self.constraint, self.adapter = constraint, adapter
        self.matcher: Any = None
        self.submitted = time.perf_counter()
        self.first_token: float | None = None  # when its first token was chosen
        self.tokens: list[int] = []
        self.prompt_tokens = 0
        self.finish: str | None = None
        self._sent = ""
        self._tokenizer: Any = None

    def push(self, token: int, tokenizer: Any, stop_ids: Iterable[int]) -> bool:
        """Add the token chosen for this row; True when the row has just finished."""
        self._tokenizer = tokenizer
        if self.first_token is None:
            self.first_token = time.perf_counter()
        if token in stop_ids:
            self.finish = "stop"
            self._send(final=True)
            return True
        self.tokens.append(token)
        if self.matcher is not None and (not self.matcher.consume_token(token) or self.matcher.is_stopped()):
            # The grammar is complete (or, never under its mask, broken: then the answer is cut).
            self.finish = "stop" if self.matcher.is_accepting() else "length"
            self._send(final=True)
            return True
        if len(self.tokens) >= self.settings.max_new_tokens:
            self.finish = "length"
            self._send(final=True)
            return True
        self._send(final=False)
        return False

    def end(self, reason: str) -> None:
        """Finish the row early (``"length"``: the model's context is full)."""
        self.finish = reason
        self._send(final=True)

    def text(self) -> str:
        if self._tokenizer is None:
            return ""
        return str(self._tokenizer.decode(self.tokens, skip_special_tokens=True)).strip()

    def _send(self, final: bool) -> None:
        """Stream what the text gained; text ending in half a character waits for the rest."""
        if self.on_text is None:
            return
        text = self.text()
        if (text.endswith("\ufffd") and not final) or not text.startswith(self._sent) or text == self._sent:
            return
        try:
            self.on_text(text[len(self._sent) :])
        except Exception:  # noqa: BLE001 - a listener that fails (its client gone) stops listening
            log.warning("a text stream failed; its answer goes on without it", exc_info=True)
            self.on_text = None
        self._sent = text


class Cohort(Protocol):
    """Rows decoded together; ``rows`` are those still running. ``step`` chooses every running
    row's next token and returns the rows that finished with it; ``drop`` ends rows early
    (cancelled); ``merge`` takes another cohort's rows into this one where the backend can
    (else returns False)."""

    rows: list[Row]
    #: The rows the batch computes: ``rows`` and, where the backend cannot drop them, ended ones.
    slots: list[Row]

    def step(self) -> list[Row]: ...

    def drop(self, rows: Iterable[Row]) -> None: ...

    def merge(self, other: Cohort) -> bool: ...


@runtime_checkable
class BatchesContinuously(Protocol):
    """A causal LM whose generation the worker schedules per decode step: at most
    ``batch_size`` rows at once and, where ``max_batch_tokens`` is set, at most that many tokens
    (each row's prompt plus its ``max_new_tokens``) reserved by the running rows."""

    batch_size: int
    max_batch_tokens: int | None

    def prompt_length(self, prompt: Prompt) -> int:
        """Tokens of ``prompt`` as the model will see it (chat template included)."""
        ...

    def start_cohort(self, rows: Sequence[Row]) -> Cohort:
        """Tokenize and prefill ``rows`` (all of one ``cohort_key``)."""
        ...

    def cohort_key(self, row: Row) -> Hashable:
        """What rows that share a cohort have in common: settings and, where the backend
        applies one adapter per batch, the adapter (constrained or not: a cohort's rows each
        have their own constraint)."""
        ...


def decode_to_end(
    model: BatchesContinuously,
    prompts: Sequence[Prompt],
    settings: GenerationSettings,
    on_text: TextSink | None = None,
    constraint: Constraint | None = None,
    adapter: str | None = None,
) -> list[Row]:
    """Answer ``prompts`` in cohorts of the model's batch size (``generate`` of the backends),
    with ``adapter`` applied where given."""

    def sink(index: int) -> Callable[[str], None] | None:
        return None if on_text is None else lambda text: on_text(index, text)

    rows = [Row(prompt, settings, sink(i), constraint, adapter) for i, prompt in enumerate(prompts)]
    for offset in range(0, len(rows), model.batch_size):
        cohort = model.start_cohort(rows[offset : offset + model.batch_size])
        while cohort.rows:
            cohort.step()
    return rows


class TokenChooser:
    """Chooses each row's next token from its logits as transformers' ``generate`` does:
    repetition penalty on the tokens the row has seen, then greedy, or temperature and top-p
    sampling. A row with a seed samples from its own generator, so its answer does not depend
    on the rows beside it."""

    def __init__(self, settings: GenerationSettings) -> None:
        import torch

        self.settings = settings
        self.sampling = settings.temperature > 0
        self.shared = torch.Generator()
        self.shared.seed()

    def generator(self, settings: GenerationSettings) -> Any:
        import torch

        if not self.sampling or settings.seed is None:
            return self.shared
        return torch.Generator().manual_seed(settings.seed)

    def choose(self, logits: Any, seen: Any, generators: Sequence[Any]) -> Any:
        """``logits`` (rows x vocabulary, float32), ``seen`` (same shape, bool) -> token ids."""
        import torch

        penalty = self.settings.repetition_penalty
        if penalty != 1.0:
            logits = torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)
        if not self.sampling:
            return logits.argmax(-1)
        logits = logits / self.settings.temperature
        if self.settings.top_p < 1.0:
            from transformers import TopPLogitsWarper

            logits = TopPLogitsWarper(self.settings.top_p)(None, logits)
        probabilities = logits.softmax(-1)
        return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probabilities, generators)])


def sampling_key(settings: GenerationSettings) -> Hashable:
    """What rows decoded by one ``TokenChooser`` share (seeds and lengths are per row)."""
    return (settings.temperature, settings.top_p, settings.repetition_penalty)
