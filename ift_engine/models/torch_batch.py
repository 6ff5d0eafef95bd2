"""Decoding on a transformers causal LM with a KV cache whose rows can leave and join.

``KVBatch`` is a left-padded batch with its KV cache: ``forward`` feeds each row one token (or a
prompt), ``keep`` drops rows, ``merge`` appends another batch's rows (the shorter cache is
left-padded with masked columns), and columns that no row attends to any more are cut. On it:

- ``TorchCohort``: the worker's continuous batching (``decoding.Cohort``): rows finish and
  leave at once, new rows prefill on their own and then join the running batch.
- ``TorchSteps``: logits then chosen tokens, for token-level ensembles (``DecodesSteps``).

Rows and joins only ever add masked padding, so a row's answer is the one it gets alone. Each
row carries its LoRA adapter (``Row.adapter``), which peft applies to that row alone in the shared
forward pass (``adapter_names``), so rows of several adapters and of the bare base decode
together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ModelError
from .base import Prompt
from .chat import chat_ids
from .decoding import Cohort, Row, TokenChooser

if TYPE_CHECKING:
    from .hf_causal import HFCausalLM


def left_padded(rows: Sequence[Sequence[int]], pad: int) -> tuple[Any, Any]:
    """(ids, attention mask) of ``rows`` left-padded to the longest."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


class KVBatch:
    """Rows of token ids with their KV cache (see the module docstring); ``adapters``: each
    row's LoRA adapter (None: the bare model)."""

    def __init__(
        self, model: HFCausalLM, prompts: Sequence[Sequence[int]], adapters: Sequence[str | None]
    ) -> None:
        self.model = model
        self.adapters = list(adapters)
        ids, self.mask = left_padded(prompts, model.tokenizer.pad_token_id)
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.past: Any = None
        self.logits = self._run(ids, self.positions)

    def _run(self, ids: Any, positions: Any) -> Any:
        device = self.model.device
        # Only the last position's logits are needed: for a prompt, the LM head over every
        # position would cost more than the rest of the prefill (as generate, logits_to_keep=1).
        last = {"logits_to_keep": 1} if self.model.keeps_last_logits else {}
        out = self.model.model(
            input_ids=ids.to(device),
            attention_mask=self.mask.to(device),
            position_ids=positions.to(device),
            cache=self.past,
            use_cache=True,
            **last,
            **self.model.adapter_args(self.adapters),
        )
        self.past = out.cache
        return out.logits[:, -1, :].float().cpu()

    def forward(self, chosen: Any) -> Any:
        """Feed each row its chosen token; the next token's logits (rows x vocabulary)."""
        import torch

        self.mask = torch.cat([self.mask, torch.ones((len(chosen), 1), dtype=torch.long)], dim=1)
        self.positions = self.positions[:, -1:] + 1
        self.logits = self._run(chosen[:, None], self.positions)
        return self.logits

    def editable(self) -> bool:
        """Whether rows can leave and join: a plain dynamic cache (not sliding windows)."""
        from transformers.cache_utils import DynamicLayer

        layers: list[Any] = getattr(self.past, "layers", None) or []
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    def keep(self, indices: Sequence[int]) -> None:
        import torch

        index = torch.tensor(list(indices), dtype=torch.long)
        self.past.batch_select_indices(index.to(self.model.device))
        self.mask, self.positions, self.logits = self.mask[index], self.positions[index], self.logits[index]
        self.adapters = [self.adapters[i] for i in indices]
        self._trim()

    def _trim(self) -> None:
        """Cut the leading columns that every row masks."""
        attended = self.mask.sum(0).nonzero()
        first = int(attended[0]) if len(attended) else 0
        if first:
            self.mask = self.mask[:, first:]
            for layer in self.past.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def merge(self, other: KVBatch) -> None:
        """Append ``other``'s rows (both caches at one width, padding masked)."""
        import torch
        import torch.nn.functional as F

        width = max(self.mask.shape[1], other.mask.shape[1])

        def widened(tensor: Any, dim_from_end: int) -> Any:
            missing = width - tensor.shape[-dim_from_end]
            return F.pad(tensor, [0, 0] * (dim_from_end - 1) + [missing, 0]) if missing else tensor

        for mine, theirs in zip(self.past.layers, other.past.layers):
            mine.keys = torch.cat([widened(mine.keys, 2), widened(theirs.keys, 2)])
            mine.values = torch.cat([widened(mine.values, 2), widened(theirs.values, 2)])
        self.mask = torch.cat([widened(self.mask, 1), widened(other.mask, 1)])
        self.positions = torch.cat([self.positions[:, -1:], other.positions[:, -1:]])
        self.logits = torch.cat([self.logits, other.logits])
        self.adapters += other.adapters


class TorchCohort(Cohort):
    """Continuous batching on a transformers causal LM (see the module docstring)."""

    def __init__(self, model: HFCausalLM, rows: Sequence[Row]) -> None:
        import torch

        self.model = model
        self.slots, self.rows = list(rows), list(rows)  # slots: the batch's rows; rows: still running
        prompts = [chat_ids(model.tokenizer, row.prompt) for row in self.slots]
        limit = model.context_length
        for row, prompt in zip(self.slots, prompts):
            row.prompt_tokens = len(prompt)
            if limit is not None and len(prompt) >= limit:
                raise ModelError(
                    f"model '{model.name}': a prompt of {len(prompt)} tokens does not fit its context of "
                    f"{limit}; shorten the input"
                )
        model.guidance.start(self.slots)
        self.batch = KVBatch(model, prompts, [row.adapter for row in self.slots])
        self.chooser = TokenChooser(self.slots[0].settings)
        self.generators = [self.chooser.generator(row.settings) for row in self.slots]
        self.seen = torch.zeros(self.batch.logits.shape, dtype=torch.bool)
        for i, prompt in enumerate(prompts):
            self.seen[i, prompt] = True
        self.editable = self.batch.editable()
        self.ended: set[int] = set()  # rows that stay in a cache that cannot drop them

    def step(self) -> list[Row]:
        import torch

        self.model.guidance.mask(self.batch.logits, self.slots)
        chosen = self.chooser.choose(self.batch.logits, self.seen, self.generators)
        self.seen[torch.arange(len(chosen)), chosen] = True
        tokenizer, stop_ids = self.model.tokenizer, self.model.stop_ids
        ending = [
            i
            for i, (row, token) in enumerate(zip(self.slots, chosen.tolist()))
            if i not in self.ended and (row.push(token, tokenizer, stop_ids) or self._context_full(row))
        ]
        finished = [self.slots[i] for i in ending]
        kept = self._remove(ending)
        if self.rows:
            self.batch.forward(chosen[kept])
        return finished

    def _context_full(self, row: Row) -> bool:
        """End a row whose next token would pass the model's positions."""
        limit = self.model.context_length
        if limit is None or row.prompt_tokens + len(row.tokens) < limit:
            return False
        row.end("length")
        return True

    def drop(self, rows: Iterable[Row]) -> None:
        leaving = {id(row) for row in rows}
        self._remove([i for i, row in enumerate(self.slots) if id(row) in leaving])

    def _remove(self, indices: Sequence[int]) -> list[int]:
        """End the rows at ``indices``; the positions of the rows the batch keeps."""
        if not self.editable:  # they stay in the cache, ignored; the cohort ends with its last row
            self.ended.update(indices)
            self.rows = [row for i, row in enumerate(self.slots) if i not in self.ended]
            return list(range(len(self.slots)))
        leaving = set(indices)
        keep = [i for i in range(len(self.slots)) if i not in leaving]
        if len(keep) < len(self.slots):
            self.slots = self.rows = [self.slots[i] for i in keep]
            self.generators = [self.generators[i] for i in keep]
            self.seen = self.seen[keep]
            if keep:
                self.batch.keep(keep)
        return keep

    def merge(self, other: Cohort) -> bool:
        if not (isinstance(other, TorchCohort) and self.editable and other.editable and self.rows):
            return False
        import torch

        self.batch.merge(other.batch)
        self.slots = self.rows = self.slots + other.slots
        self.generators += other.generators
        self.seen = torch.cat([self.seen, other.seen])
        return True


class TorchSteps:
    """Step-by-step decoding for token-level ensembles (``DecodingSteps``)."""

    def __init__(self, model: HFCausalLM, prompts: Sequence[Prompt]) -> None:
        ids = [chat_ids(model.tokenizer, p) for p in prompts]
        self.batch = KVBatch(model, ids, [model.active] * len(ids))

    def logits(self) -> Any:
        return self.batch.logits

    def advance(self, chosen: Sequence[int]) -> None:
        import torch

        self.batch.forward(torch.tensor(list(chosen)))
