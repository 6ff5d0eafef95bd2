"""Prompt + answer -> token ids with labels masked (-100) everywhere but on the answer.

Prompt and whole conversation are tokenized through ``models.chat``: the chat template's
markers are control tokens, and every content (the answer included) stays text, so a record
holding "<|im_end|>" trains on that text, not on an end of turn. The prompt's ids are a prefix
of the conversation's (a warning says when a template breaks that); the mask covers them.
The end-of-turn token after the answer is trained, so the model learns to stop.
"""

from __future__ import annotations

import warnings
from typing import Any

from ..models.chat import chat_ids, format_chat, text_ids
from ..models.hf_causal import end_of_turn_ids
from .data import Example

IGNORE = -100


class BoundaryWarning(UserWarning):
    """The prompt tokenizes differently alone and inside the whole conversation."""


def conversation_ids(tokenizer: Any, example: Example) -> tuple[list[int], list[int]]:
    """(prompt ids, prompt + answer ids) through the chat template, or plain text."""
    prompt = chat_ids(tokenizer, example.prompt)
    if not tokenizer.chat_template:
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        return prompt, prompt + text_ids(tokenizer, example.completion) + eos
    answered = [*example.prompt, {"role": "assistant", "content": example.completion}]
    if not format_chat(tokenizer, answered, add_generation_prompt=False).startswith(
        format_chat(tokenizer, example.prompt)
    ):
        raise ValueError("the chat template renders the prompt differently once the answer is added")
    return prompt, chat_ids(tokenizer, answered, add_generation_prompt=False)


def plain_text_features(tokenizer: Any, text: str, max_length: int) -> dict[str, list[int]]:
    """Language modelling on plain text: every token and the end of sequence are trained."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids = (text_ids(tokenizer, text) + eos)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)}


def tokenize_example(
    tokenizer: Any, example: Example, max_length: int, stop_ids: list[int] | None = None
) -> dict[str, list[int]]:
    """``input_ids``, ``attention_mask`` and ``labels`` for one example (no padding)."""
    if example.language_model:
        return plain_text_features(tokenizer, example.completion, max_length)
    stop_ids = stop_ids or end_of_turn_ids(tokenizer, None)
    alone, ids = conversation_ids(tokenizer, example)
    n_prompt = len(alone)
    if ids[:n_prompt] != alone:
        warnings.warn(
            f"prompt tokens differ at the prompt/answer boundary ({n_prompt} alone); the mask covers "
            "the prompt's length",
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
