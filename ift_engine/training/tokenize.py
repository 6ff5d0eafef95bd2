"""Prompt + answer -> token ids with labels masked (-100) everywhere but on the answer.

The prompt length comes from the joined tokenization (the prompt text is a prefix of the full
chat text; the tokens covering it are found through the offsets), so a token that merges across
the boundary cannot shift the mask; a warning says when the prompt alone tokenizes differently.
The end-of-turn token after the answer is trained, so the model learns to stop.
"""

from __future__ import annotations

import warnings
from typing import Any

from ..models.hf_causal import end_of_turn_ids, format_chat
from .data import Example

IGNORE = -100


class BoundaryWarning(UserWarning):
    """The prompt tokenizes differently alone and inside the joined text."""


def joined_texts(tokenizer: Any, example: Example) -> tuple[str, str]:
    """(prompt text, prompt + answer text) through the chat template, or plain text."""
    prompt = format_chat(tokenizer, example.prompt)
    if tokenizer.chat_template:
        full = tokenizer.apply_chat_template(
            [*example.prompt, {"role": "assistant", "content": example.completion}], tokenize=False
        )
    else:
        full = prompt + example.completion + (tokenizer.eos_token or "")
    return prompt, full


def tokenize_example(
    tokenizer: Any, example: Example, max_length: int, stop_ids: list[int] | None = None
) -> dict[str, list[int]]:
    """``input_ids``, ``attention_mask`` and ``labels`` for one example (no padding)."""
    stop_ids = stop_ids or end_of_turn_ids(tokenizer, None)
    prompt_text, full_text = joined_texts(tokenizer, example)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template renders the prompt differently once the answer is added")
    enc = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    n_prompt = sum(1 for start, _ in offsets if start < len(prompt_text))
    alone = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    if alone != ids[:n_prompt]:
        warnings.warn(
            f"prompt tokens differ at the prompt/answer boundary ({len(alone)} alone, {n_prompt} "
            "joined); the mask follows the joined tokenization",
            BoundaryWarning,
            stacklevel=2,
        )
    # Train up to and including the first end-of-turn token after the prompt; drop the rest
    # (e.g. the newline some templates add after it).
    end = next((i for i in range(n_prompt, len(ids)) if ids[i] in stop_ids), len(ids) - 1)
    prompt_ids, answer_ids = ids[:n_prompt], ids[n_prompt : end + 1]
    if len(prompt_ids) + len(answer_ids) > max_length:
        # Keep the answer whole; cut the middle of the prompt (its head holds the instruction,
        # its tail the assistant header the answer follows).
        answer_ids = answer_ids[: max_length - 8] if len(answer_ids) > max_length - 8 else answer_ids
        budget = max_length - len(answer_ids)
        head = budget // 2
        prompt_ids = prompt_ids[:head] + prompt_ids[len(prompt_ids) - (budget - head) :]
    input_ids = prompt_ids + answer_ids
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": [IGNORE] * len(prompt_ids) + answer_ids,
    }
