"""The ``hf-causal`` backend: a transformers causal LM for generation, scoring and classification."""

from __future__ import annotations

import inspect
from collections.abc import Hashable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ModelError
from .adapters import AdapterError, SwitchesAdapters, read_adapter_config
from .base import GenerationSettings, Prompt, StreamingModel, TextSink
from .chat import chat_ids, text_ids
from .decoding import Row, decode_to_end, sampling_key
from .guidance import Guidance
from .torch_batch import TorchCohort, TorchSteps
from .torch_utils import Device, DType, inference_mode, load_pretrained, release_torch_model

if TYPE_CHECKING:  # imported lazily: see torch_utils
    from transformers import PreTrainedTokenizerBase

# End-of-turn markers of common chat formats; generation stops at any that the vocabulary has.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>")
#: peft's name, in a mixed-adapter batch, for the rows that run on the bare base.
BASE_ROWS = "__base__"


class CausalLMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: Device = "auto"
    dtype: DType = "auto"
    batch_size: int = Field(16, ge=1, description="most prompts decoded together")
    max_batch_tokens: int | None = Field(
        None, ge=1, description="most tokens (prompt + max_new_tokens) the rows decoded together reserve"
    )


def generation_eos(model: Any) -> int | list[int] | None:
    """The end-of-sequence id(s) of a model's generation config, if it has one."""
    return getattr(getattr(model, "generation_config", None), "eos_token_id", None)


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase, model_eos: int | list[int] | None) -> list[int]:
    """Every token id that ends an answer: the model's eos, the tokenizer's, chat end markers."""
    ids: list[int] = []
    for candidate in [model_eos, tokenizer.eos_token_id]:
        if isinstance(candidate, int):
            ids.append(candidate)
        elif candidate:
            ids.extend(candidate)
    vocab = tokenizer.get_vocab()
    ids.extend(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
    return list(dict.fromkeys(ids))


def repeat_cache(past: Any, times: int) -> Any:
    """A KV cache with each batch row repeated ``times`` times (row i -> rows i*times ...)."""
    if hasattr(past, "batch_repeat_interleave"):  # transformers Cache objects
        past.batch_repeat_interleave(times)
        return past
    return type(past)(tuple(t.repeat_interleave(times, 0) for t in layer) for layer in past)


class HFCausalLM(StreamingModel, SwitchesAdapters):
    backend = "hf-causal"
    capabilities = frozenset({"generate", "stream", "score", "steps"})
    options_model = CausalLMOptions
    structured_outputs = True
    serves_adapters = True

    def __init__(
        self,
        name: str,
        model: Any,  # a transformers model
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 16,
        max_batch_tokens: int | None = None,
    ) -> None:
        super().__init__(name)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.device = model.device
        self.keeps_last_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        positions = getattr(model.config, "max_position_embeddings", None)
        self.context_length: int | None = positions if isinstance(positions, int) else None
        self.stop_ids = end_of_turn_ids(tokenizer, generation_eos(model))
        if not self.stop_ids:
            raise ModelError(f"model '{name}' has no end-of-sequence token; generation cannot stop")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(self.stop_ids[0])
        self.guidance = Guidance(name, tokenizer, self.stop_ids, getattr(model.config, "vocab_size", None))
        self.adapters: set[str] = set()

    @classmethod
    def load(cls, name: str, source: str, options: CausalLMOptions) -> HFCausalLM:
        from transformers import AutoModelForCausalLM

        model, tokenizer = load_pretrained(
            AutoModelForCausalLM, "causal LM", name, source, options.device, options.dtype
        )
        return cls(name, model, tokenizer, options.batch_size, options.max_batch_tokens)

    def inference(self) -> AbstractContextManager[Any]:
        return inference_mode()

    def _batches(self, items: Sequence) -> list[Sequence]:
        return [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]

    def _generate(
        self, prompts: Sequence[Prompt], settings: GenerationSettings, on_text: TextSink | None
    ) -> list[str]:
        import torch

        with torch.inference_mode():
            return [row.text() for row in decode_to_end(self, prompts, settings, on_text)]

    def cohort_key(self, row: Row) -> Hashable:
        """Rows of every adapter share a cohort: peft runs each row's own adapter."""
        return sampling_key(row.settings)

    def add_adapter(self, name: str, folder: Path) -> None:
        """Load a peft LoRA adapter beside the base weights (which stay unmerged, so rows of
        several adapters and of the bare base share one forward pass)."""
        if name in self.adapters:
            return
        from peft import PeftModel

        if read_adapter_config(folder).get("use_dora"):
            raise AdapterError(
                f"adapter '{folder}' is a DoRA adapter, which peft cannot mix with other rows in a "
                "batch; merge it into its base (lora.merge: true) instead"
            )
        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(folder), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(folder), adapter_name=name)
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AdapterError(f"adapter '{folder}' does not fit model '{self.name}': {first}") from None
        self.model.eval()
        self.adapters.add(name)

    def adapter_args(self, adapters: Sequence[str | None]) -> dict[str, Any]:
        """The forward pass's per-row adapters (nothing while the model has none loaded)."""
        if not self.adapters:
            return {}
        return {"adapter_names": [name or BASE_ROWS for name in adapters]}

    def prompt_length(self, prompt: Prompt) -> int:
        return len(chat_ids(self.tokenizer, prompt))

    def start_cohort(self, rows: Sequence[Row]) -> TorchCohort:
        """Prefill ``rows``; the worker runs this and every step under ``torch.inference_mode``."""
        return TorchCohort(self, rows)

    def score(
        self, prompts: Sequence[Prompt], choices: Sequence[str], mean: bool = False
    ) -> list[list[float]]:
        """Sum (``mean``: mean per token) of the log-probabilities of each choice, followed by
        end of turn, as the answer.

        Each prompt runs once; its KV cache is then shared by all the choices, so scoring k
        labels costs about one forward pass of the prompt, not k.
        """
        import torch

        with torch.inference_mode():
            prompt_ids = [chat_ids(self.tokenizer, p) for p in prompts]
            choice_ids = [text_ids(self.tokenizer, c) + self.stop_ids[:1] for c in choices]
            # Batch prompts of similar length together: less padding to compute.
            order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
            rows: list[list[float]] = [[] for _ in prompt_ids]
            for batch in self._batches(order):
                for i, row in zip(batch, self._score_batch([prompt_ids[i] for i in batch], choice_ids, mean)):
                    rows[i] = row
        return rows

    def _score_batch(
        self, prompts: Sequence[list[int]], choices: list[list[int]], mean: bool
    ) -> list[list[float]]:
        """One pass over the prompts, then one over every choice after every prompt from the
        prompts' KV cache; each choice's score is the sum (or mean) of its tokens' log-probs."""
        first, past, mask, positions = self._prompt_pass(prompts)
        steps = self._choice_pass(choices, repeat_cache(past, len(choices)), mask, positions)
        rows: list[list[float]] = []
        for p in range(len(prompts)):
            scores: list[float] = []
            for k, tokens in enumerate(choices):
                r = p * len(choices) + k
                logprobs = [first[p, tokens[0]]] + [steps[r, i - 1, t] for i, t in enumerate(tokens) if i > 0]
                total = float(sum(logprobs))
                scores.append(total / len(tokens) if mean else total)
            rows.append(scores)
        return rows

    def _prompt_pass(self, prompts: Sequence[list[int]]) -> tuple[Any, Any, Any, Any]:
        """The prompts left-padded (each ends in the last column) and run once: the log-probs
        of each choice's first token, the KV cache, the attention mask and the positions."""
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=True,
            # Only the last position predicts a choice: the head over every other one would
            # cost about a fifth of the pass (a 49k vocabulary on a 135M model).
            **({"logits_to_keep": 1} if self.keeps_last_logits else {}),
            **self.adapter_args([self.active] * len(prompts)),
        )
        return out.logits[:, -1].float().log_softmax(-1).cpu(), out.cache, mask, positions

    def _choice_pass(self, choices: list[list[int]], past: Any, mask: Any, positions: Any) -> Any:
        """Every choice after every prompt (row p * len(choices) + c), right-padded, from the
        prompts' cache: the log-probs at each choice position."""
        import torch

        n_prompts, n_choices = mask.shape[0], len(choices)
        length = max(len(c) for c in choices)
        choice = torch.full((n_choices, length), self.tokenizer.pad_token_id, dtype=torch.long)
        choice_mask = torch.zeros((n_choices, length), dtype=torch.long)
        for row, c in enumerate(choices):
            choice[row, : len(c)] = torch.tensor(c)
            choice_mask[row, : len(c)] = 1
        out = self.model(
            input_ids=choice.repeat(n_prompts, 1).to(self.device),
            attention_mask=torch.cat(
                [mask.repeat_interleave(n_choices, 0), choice_mask.repeat(n_prompts, 1)], 1
            ).to(self.device),
            position_ids=(positions[:, -1:].repeat_interleave(n_choices, 0) + 1 + torch.arange(length)).to(
                self.device
            ),
            cache=past,
            use_cache=True,
            **self.adapter_args([self.active] * (n_prompts * n_choices)),
        )
        return out.logits.float().log_softmax(-1).cpu()

    def close(self) -> None:
        release_torch_model(self)

    def start_decoding(self, prompts: Sequence[Prompt]) -> TorchSteps:
        """Step-by-step decoding (token-level ensembles); call under ``torch.inference_mode``."""
        return TorchSteps(self, prompts)
