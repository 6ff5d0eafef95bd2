"""Token-level ensemble decoding: at each step the members' next-token distributions are
averaged (weighted) and one token is chosen; each member decodes step by step on its own
(``DecodesSteps``: the PyTorch and ONNX Runtime GenAI causal LMs), with its own KV cache.

With one member (or copies of one model) under greedy decoding this reproduces that model's
own ``generate`` token for token: repetition penalty and temperature are applied to each
member's logits exactly as transformers applies them, before the softmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import DecodesSteps, GenerationSettings, Prompt
from .chat import encode_chats


def _processors(settings: GenerationSettings) -> Any:
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.temperature > 0:
        processors.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(settings.top_p))
    return processors


def average_decode(
    members: Sequence[DecodesSteps],
    weights: Sequence[float],
    prompts: Sequence[Prompt],
    settings: GenerationSettings,
) -> list[str]:
    import torch

    tokenizer, stop_list = members[0].tokenizer, members[0].stop_ids
    stop_ids = torch.tensor(stop_list)
    sampling = settings.temperature > 0
    processors = _processors(settings)
    generator = (
        torch.Generator().manual_seed(settings.seed) if sampling and settings.seed is not None else None
    )
    # The sequence as the repetition penalty sees it: left-padded prompts, then the answers.
    sequence = encode_chats(tokenizer, prompts)["input_ids"]
    prompt_length = sequence.shape[1]
    finished = torch.zeros(len(prompts), dtype=torch.bool)
    with torch.inference_mode():
        steps = [member.start_decoding(prompts) for member in members]
        for _ in range(settings.max_new_tokens):
            mixed = sum(
                weight * processors(sequence, step.logits()).softmax(-1)
                for step, weight in zip(steps, weights)
            )
            if sampling:
                chosen = torch.multinomial(mixed, 1, generator=generator).squeeze(1)
            else:
                chosen = mixed.argmax(-1)
            chosen = torch.where(finished, torch.tensor(tokenizer.pad_token_id), chosen)
            sequence = torch.cat([sequence, chosen[:, None]], dim=1)
            finished |= torch.isin(chosen, stop_ids)
            if finished.all():
                break
            for step in steps:
                step.advance(chosen.tolist())
    answers = []
    for row in sequence[:, prompt_length:].tolist():
        end = next((i for i, t in enumerate(row) if t in stop_list), len(row))
        answers.append(tokenizer.decode(row[:end], skip_special_tokens=True).strip())
    return answers
