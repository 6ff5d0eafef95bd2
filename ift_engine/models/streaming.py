"""Streaming a batch's answers as they are generated (a transformers streamer per batch)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .base import TextSink


class TextDeltas:
    """Receives the new token of every row at each step of ``generate`` (transformers calls
    ``put`` with the prompts first, then with each step's tokens, then ``end``) and hands each
    row's new text to ``on_text(offset + row, text)``. A row stops at its first end-of-turn token;
    text ending in half a character waits for the rest."""

    def __init__(self, tokenizer: Any, on_text: TextSink, offset: int, stop_ids: Iterable[int]) -> None:
        self.tokenizer, self.on_text, self.offset = tokenizer, on_text, offset
        self.stop = set(stop_ids)
        self.rows: list[list[int]] = []
        self.sent: list[str] = []
        self.done: list[bool] = []
        self.started = False

    def put(self, value: Any) -> None:
        if not self.started:  # the prompts
            self.started = True
            count = value.shape[0]
            self.rows, self.sent, self.done = [[] for _ in range(count)], [""] * count, [False] * count
            return
        for row, token in enumerate(value.reshape(len(self.rows), -1)[:, -1].tolist()):
            if self.done[row]:
                continue
            if token in self.stop:
                self.done[row] = True
                continue
            self.rows[row].append(token)
            self._send(row, final=False)

    def _send(self, row: int, final: bool) -> None:
        text = self.tokenizer.decode(self.rows[row], skip_special_tokens=True).lstrip()
        if (
            (text.endswith("\ufffd") and not final)
            or not text.startswith(self.sent[row])
            or text == self.sent[row]
        ):
            return
        self.on_text(self.offset + row, text[len(self.sent[row]) :])
        self.sent[row] = text

    def end(self) -> None:
        """Send what was held back (text that ends in an undecodable byte)."""
        for row in range(len(self.rows)):
            self._send(row, final=True)
