"""Decoding limited to a ``Constraint``, row by row, inside continuous batching.

Each constrained row has its own llguidance matcher (``Row.matcher``), so rows with different
schemas, and rows without any, decode in one batch. Before a token is chosen, ``mask`` forbids
in the logits of each constrained row every token its grammar does not allow next; the chosen
token then advances the row's matcher (``Row.push``), and the row ends once its grammar is
complete or, where it may end, the model picks end of turn.

The PyTorch backend masks its own logits; onnxruntime-genai's are read, masked and handed back
(``set_logits``): its built-in guidance (``GeneratorParams.set_guidance``) has one grammar per
generator and fails once one row of a batch completes its grammar before the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ModelError

if TYPE_CHECKING:
    from ..structured import Constraint
    from .decoding import Row


class Guidance:
    """A model's tokenizer as llguidance reads it (made on first use: about a second for a
    large vocabulary) and the matchers of its rows."""

    def __init__(self, name: str, tokenizer: Any, stop_ids: Sequence[int], vocabulary: int | None) -> None:
        self.name, self.tokenizer, self.stop_ids = name, tokenizer, list(stop_ids)
        # The logits may be wider than the tokenizer (embeddings padded to a multiple of 64).
        self.vocabulary = vocabulary if vocabulary is not None and vocabulary >= len(tokenizer) else None
        self._llg: Any = None

    def matcher(self, constraint: Constraint) -> Any:
        """A fresh matcher of ``constraint`` over this model's tokens."""
        from llguidance import LLMatcher

        if self._llg is None:
            import llguidance.hf

            try:
                self._llg = llguidance.hf.from_tokenizer(self.tokenizer, self.vocabulary, self.stop_ids)
            except ValueError as exc:  # a slow (Python) tokenizer
                raise ModelError(f"model '{self.name}': cannot constrain decoding: {exc}") from None
        matcher = LLMatcher(self._llg, constraint.grammar(), log_level=0)
        if matcher.is_error():
            problem = first_line(matcher.get_error())
            raise ModelError(f"model '{self.name}': cannot constrain decoding: {problem}")
        return matcher

    def start(self, rows: Sequence[Row]) -> None:
        """Give each constrained row of a new cohort its matcher."""
        for row in rows:
            if row.constraint is not None and row.matcher is None:
                row.matcher = self.matcher(row.constraint)

    def mask(self, logits: Any, rows: Sequence[Row]) -> None:
        """Forbid, in ``logits`` (a float32 CPU tensor, one row per ``rows``), every token the
        constrained rows' grammars do not allow next. Other rows are left as they are."""
        guided = [i for i, row in enumerate(rows) if row.matcher is not None and row.finish is None]
        if not guided:
            return
        import llguidance.numpy as lln
        import numpy as np

        bitmask = lln.allocate_token_bitmask(len(guided), self._llg.vocab_size)
        for k, i in enumerate(guided):
            lln.fill_next_token_bitmask(rows[i].matcher, bitmask, k)
        # Bit j of word w allows token 32 * w + j. Unpacked in C, this is several times faster
        # than llguidance's own numpy kernel; its torch kernel is torch.compile'd, which takes
        # seconds (and a C compiler) on its first call.
        bits = np.unpackbits(bitmask.astype("<i4", copy=False).view(np.uint8), axis=1, bitorder="little")
        width = logits.shape[-1]
        allowed = np.zeros((len(guided), width), dtype=bool)
        allowed[:, : min(width, bits.shape[1])] = bits[:, :width]
        values = logits.numpy()  # the tensor's own memory
        chosen = values[guided]
        chosen[~allowed] = -np.inf
        values[guided] = chosen


def first_line(message: str) -> str:
    lines = message.strip().splitlines()
    return lines[0] if lines else "unknown error"
