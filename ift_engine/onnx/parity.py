"""How closely an ONNX export follows PyTorch, on a few probe prompts (``ift export`` stores it
in the export's ``ift_model.json``)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..models.chat import chat_ids
from ..models.ort import OnnxOptions, OrtClassifierModule

PROBES: tuple[str, ...] = (
    "Write an outline for a short article about how honeybees communicate.",
    "Is this review positive or negative? The room was dirty and the staff were rude.",
    "用一句话概括：今天的天气很好，我们去公园散步了。",
    "List three uses of copper.",
)


def causal_parity(
    reference: Any,
    folder: Path,
    tokenizer: Any,
    device: str,
    new_tokens: int = 16,
    adapter: Path | None = None,
) -> dict[str, float]:
    """How closely the export follows PyTorch on the probe prompts, each followed by PyTorch's
    ``new_tokens`` greedy tokens: the largest |logit difference| over every position; the share
    of those continuation tokens the export also ranks first (teacher-forced, so one early
    difference does not decide the rest); and the share of greedy tokens that agree position by
    position when each model decodes on its own. With ``adapter`` (an ONNX adapter folder), the
    export runs with that adapter applied."""
    import torch

    from ..models.genai import GenaiCausalLM
    from ..models.hf_causal import HFCausalLM

    candidate = GenaiCausalLM.load("export", str(folder), OnnxOptions(device=device))
    if adapter is not None:
        candidate.add_adapter("checked", adapter)
    chats = [[{"role": "user", "content": p}] for p in PROBES]
    # A copy: HFCausalLM may give the tokenizer a pad token, and exports save it as the source had it.
    reference_lm = HFCausalLM("reference", reference, copy.deepcopy(tokenizer))
    with torch.inference_mode(), candidate.using_adapter("checked" if adapter is not None else None):
        continuations = _greedy(reference_lm, chats, new_tokens)
        own = _greedy(candidate, chats, new_tokens)
        prompts = [chat_ids(tokenizer, chat) for chat in chats]
        rows = [p + c for p, c in zip(prompts, continuations)]
        got = candidate.prompt_logits(rows)
        diff, top1 = 0.0, []
        for index, (ids, prompt) in enumerate(zip(rows, prompts)):
            want = reference(torch.tensor([ids], device=reference.device)).logits[0].float().cpu()
            diff = max(diff, (want - got[index, : len(ids)]).abs().max().item())
            predicted = got[index, len(prompt) - 1 : len(ids) - 1].argmax(-1)
            top1 += (predicted == torch.tensor(ids[len(prompt) :])).tolist()
    greedy = [a == b for want, mine in zip(continuations, own) for a, b in zip(want, mine)]
    return {
        "max_abs_logit_diff": diff,
        "top1_agreement": sum(top1) / len(top1),
        "greedy_agreement": sum(greedy) / len(greedy),
        "probes": len(PROBES),
    }


def _greedy(model: Any, chats: Sequence[Any], steps: int) -> list[list[int]]:
    """``steps`` greedy tokens for each chat, end of turn included (no early stop)."""
    decoding = model.start_decoding(chats)
    rows: list[list[int]] = [[] for _ in chats]
    for _ in range(steps):
        chosen = decoding.logits().argmax(-1).tolist()
        for row, token in zip(rows, chosen):
            row.append(token)
        decoding.advance(chosen)
    return rows


def classifier_parity(reference: Any, folder: Path, tokenizer: Any, device: str) -> dict[str, float]:
    """Max |logit difference| and the share of probe texts given the same label."""
    import torch

    candidate = OrtClassifierModule(folder, OnnxOptions(device=device))
    enc = tokenizer(list(PROBES), return_tensors="pt", padding=True, truncation=True)
    with torch.inference_mode():
        want = reference(**enc).logits.float()
        got = candidate(**enc).logits.float()
    return {
        "max_abs_logit_diff": (want - got).abs().max().item(),
        "label_agreement": (want.argmax(-1) == got.argmax(-1)).float().mean().item(),
        "probes": len(PROBES),
    }
