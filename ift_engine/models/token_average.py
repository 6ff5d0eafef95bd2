"""Token-level ensemble decoding: at each step the members' next-token distributions are
averaged (weighted) and one token is chosen; each member keeps its own KV cache.

With one member (or copies of one model) under greedy decoding this reproduces that model's
own ``generate`` token for token: repetition penalty and temperature are applied to each
member's logits exactly as transformers applies them, before the softmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import GenerationSettings, Prompt
from .chat import encode_chats
from .torch_thread import on_torch_thread


@on_torch_thread  # where the members run: one call at a time, tokenizing included
def average_decode(
    members: Sequence[Any],
    weights: Sequence[float],
    prompts: Sequence[Prompt],
    settings: GenerationSettings,
) -> list[str]:
    import torch
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopPLogitsWarper,
    )

    tokenizer = members[0].tokenizer
    stop_ids = torch.tensor(members[0].stop_ids)
    sampling = settings.temperature > 0
    processors = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if sampling:
        processors.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(settings.top_p))
    generator = (
        torch.Generator().manual_seed(settings.seed) if sampling and settings.seed is not None else None
    )

    enc = encode_chats(tokenizer, prompts)
    sequence, mask = enc["input_ids"], enc["attention_mask"]
    step_ids, positions = sequence, (mask.cumsum(-1) - 1).clamp(min=0)
    pasts: list[Any] = [None] * len(members)
    finished = torch.zeros(len(prompts), dtype=torch.bool)
    prompt_length = sequence.shape[1]
    with torch.inference_mode():
        for _ in range(settings.max_new_tokens):
            mixed: Any = None  # the weighted sum over members (there is at least one)
            for index, (member, weight) in enumerate(zip(members, weights)):
                device = member.device
                out = member.model(
                    input_ids=step_ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    past_key_values=pasts[index],
                    use_cache=True,
                )
                pasts[index] = out.past_key_values
                logits = processors(sequence, out.logits[:, -1, :].float().cpu())
                probs = weight * logits.softmax(-1)
                mixed = probs if mixed is None else mixed + probs
            if sampling:
                chosen = torch.multinomial(mixed, 1, generator=generator).squeeze(1)
            else:
                chosen = mixed.argmax(-1)
            chosen = torch.where(finished, torch.tensor(tokenizer.pad_token_id), chosen)
            sequence = torch.cat([sequence, chosen[:, None]], dim=1)
            finished |= torch.isin(chosen, stop_ids)
            if finished.all():
                break
            step_ids = chosen[:, None]
            mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
            positions = positions[:, -1:] + 1
    answers = []
    for row in sequence[:, prompt_length:].tolist():
        end = next((i for i, t in enumerate(row) if t in members[0].stop_ids), len(row))
        answers.append(tokenizer.decode(row[:end], skip_special_tokens=True).strip())
    return answers
