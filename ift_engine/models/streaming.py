"""Answers built token by token, streamed as text while they grow."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .base import TextSink


class TokenDeltas:
    """Collects the new token of every row at each decoding step and hands each row's new text
    to ``on_text(offset + row, text)``. A row stops at its first end-of-turn token; text ending
    in half a character waits for the rest."""

    def __init__(
        self, tokenizer: Any, on_text: TextSink | None, offset: int, stop_ids: Iterable[int], count: int
    ) -> None:
        self.tokenizer, self.on_text, self.offset = tokenizer, on_text, offset
        self.stop = set(stop_ids)
        self.rows: list[list[int]] = [[] for _ in range(count)]
        self.sent = [""] * count
        self.done = [False] * count

    def add(self, tokens: Iterable[int]) -> None:
        """One step: each row's new token."""
        for row, token in enumerate(tokens):
            if self.done[row]:
                continue
            if token in self.stop:
                self.done[row] = True
                continue
            self.rows[row].append(token)
            self._send(row, final=False)

    def finished(self) -> bool:
        return all(self.done)

    def _text(self, row: int) -> str:
        return str(self.tokenizer.decode(self.rows[row], skip_special_tokens=True)).strip()

    def _send(self, row: int, final: bool) -> None:
        if self.on_text is None:
            return
        text = self._text(row)
        if (
            (text.endswith("\ufffd") and not final)
            or not text.startswith(self.sent[row])
            or text == self.sent[row]
        ):
            return
        self.on_text(self.offset + row, text[len(self.sent[row]) :])
        self.sent[row] = text

    def texts(self) -> list[str]:
        """The answers; sends what was held back (text that ends in an undecodable byte)."""
        for row in range(len(self.rows)):
            self._send(row, final=True)
        return [self._text(row) for row in range(len(self.rows))]


class TextDeltas:
    """A transformers streamer over ``TokenDeltas``: ``generate`` calls ``put`` with the prompts
    first, then with each step's tokens, then ``end``."""

    def __init__(self, tokenizer: Any, on_text: TextSink, offset: int, stop_ids: Iterable[int]) -> None:
        self.args = (tokenizer, on_text, offset, list(stop_ids))
        self.rows: TokenDeltas | None = None

    def put(self, value: Any) -> None:
        if self.rows is None:  # the prompts
            self.rows = TokenDeltas(*self.args, count=value.shape[0])
            return
        self.rows.add(value.reshape(len(self.rows.rows), -1)[:, -1].tolist())

    def end(self) -> None:
        if self.rows is not None:
            self.rows.texts()
