"""Chat prompts to token ids, with message contents kept as text.

A chat template wraps each message in control tokens (``<|im_start|>user ... <|im_end|>``).
Tokenizing the rendered text as one string would also turn control-token text that a user typed
(``<|im_end|><|im_start|>system``) into real control tokens. So the template is rendered with a
marker in place of each content; the template's own text is tokenized with its special tokens,
and each content with ``split_special_tokens=True``, so that it stays text. Generation, scoring,
classification and training all tokenize through here.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from .base import Message

_NONCE = secrets.token_hex(6)
# Private-use characters around a nonce: no real text holds them, and no template trims them.
_MARKER = re.compile(f"\ue000ift{_NONCE}:(\\d+)\ue001")


def _marker(index: int) -> str:
    return f"\ue000ift{_NONCE}:{index}\ue001"


def format_chat(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    """The prompt as text: the tokenizer's chat template, or the plain contents for base models
    (for display and for tokenizers without special tokens; models get ``chat_ids``)."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=add_generation_prompt, tokenize=False
        )
    return "\n\n".join(m["content"] for m in messages) + ("\n\n" if add_generation_prompt else "")


def chat_segments(
    render: Callable[[list[Message]], str], messages: Sequence[Message]
) -> list[tuple[str, bool]]:
    """(text, is a message content) pieces of a chat rendered by ``render`` (a chat template),
    in order: a backend tokenizes the template's pieces with control tokens and the contents
    as plain text."""
    marked = [{**m, "content": _marker(i)} for i, m in enumerate(messages)]
    rendered = render(marked)
    pieces: list[tuple[str, bool]] = []
    position = 0
    for match in _MARKER.finditer(rendered):
        pieces.append((rendered[position : match.start()], False))
        pieces.append((messages[int(match.group(1))]["content"], True))
        position = match.end()
    pieces.append((rendered[position:], False))
    return [(text, content) for text, content in pieces if text]


def chat_ids(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of a chat: the template's markers as control tokens, contents as text.

    The whole text is tokenized at once (exactly the ids plain tokenizing gives) unless a
    control token then falls inside a content; only then is each piece tokenized on its own,
    contents with their control-token text split (the pieces' boundaries may then merge
    differently, a small price for a prompt that tried to forge a turn)."""
    segments = chat_segments(lambda marked: format_chat(tokenizer, marked, add_generation_prompt), messages)
    if tokenizer.is_fast:
        ids = _whole_if_safe(tokenizer, segments)
        if ids is not None:
            return ids
    ids = []
    for text, content in segments:
        ids += text_ids(tokenizer, text, literal=content)
    return ids


def _whole_if_safe(tokenizer: Any, segments: list[tuple[str, bool]]) -> list[int] | None:
    """The ids of the joined text, or None when a control token lies inside a content."""
    spans, position = [], 0
    for text, content in segments:
        if content:
            spans.append((position, position + len(text)))
        position += len(text)
    enc = tokenizer("".join(t for t, _ in segments), add_special_tokens=False, return_offsets_mapping=True)
    control = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    for token, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        if token in control and any(a <= start and end <= b for a, b in spans):
            return None
    return list(enc["input_ids"])


def text_ids(tokenizer: Any, text: str, literal: bool = True) -> list[int]:
    """Token ids of ``text``; ``literal``: special-token text in it stays text."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=literal)["input_ids"]


def encode_chats(tokenizer: Any, prompts: Sequence[Sequence[Message]]) -> Any:
    """Chat prompts as one left-padded batch of tensors (every prompt ends in the last column,
    where generation continues). The chat template already holds any BOS token: none is added."""
    import torch
    from transformers import BatchEncoding

    rows = [chat_ids(tokenizer, p) for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return BatchEncoding({"input_ids": ids, "attention_mask": mask})
