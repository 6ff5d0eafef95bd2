"""Causal LMs on ONNX Runtime GenAI: the ``onnx`` backend's generation, scoring and classification.

onnxruntime-genai runs the decoding loop, the KV cache and the sampling in native code on
models built by its model builder (``ift export``): at batch 1 that is several times faster
than transformers on a CPU. The engine's own tokenizer (transformers) turns chats into ids, so
user text never becomes control tokens here either; the ids go to the generator right-padded
with a padding id that is not an end-of-turn token (onnxruntime-genai masks trailing padding).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError, first_line
from .adapters import ONNX_ADAPTER_FILE, AdapterError, SwitchesAdapters
from .base import GenerationSettings, Prompt, StreamingModel, TextSink
from .chat import chat_ids, text_ids
from .decoding import Cohort, Row, decode_to_end
from .guidance import Guidance
from .hf_causal import end_of_turn_ids
from .ort import CUDA, OnnxOptions, pick_provider
from .resolve import read_json_object

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedTokenizerBase

GENAI_CONFIG = "genai_config.json"


def is_genai_export(folder: Path) -> bool:
    return (folder / GENAI_CONFIG).is_file()


def padding_id(tokenizer: PreTrainedTokenizerBase, stop_ids: Sequence[int]) -> int:
    """An id to pad with that no answer ends on: padding equal to end of turn would hide it."""
    candidates = chain([tokenizer.pad_token_id, tokenizer.unk_token_id], range(len(tokenizer)))
    return next(i for i in candidates if i is not None and i not in stop_ids)


@contextmanager
def native_errors(name: str) -> Iterator[None]:
    """onnxruntime-genai reports failures as RuntimeError: name the model and say what to do."""
    try:
        yield
    except RuntimeError as exc:
        first = first_line(exc)
        raise ModelError(
            f"model '{name}': onnxruntime-genai failed: {first}; export the model again with `ift export`"
        ) from None


def _model_config(folder: Path) -> dict[str, Any]:
    """The ``model`` section of an export's genai_config.json (a one-line error if damaged)."""
    model = read_json_object(folder / GENAI_CONFIG).get("model")
    context = model.get("context_length", 2048) if isinstance(model, dict) else None
    if not isinstance(model, dict) or not isinstance(context, int) or context < 2:
        raise ModelError(
            f"{folder / GENAI_CONFIG}: no valid 'model' section (context_length included); "
            "export the model again"
        )
    return model


class GenaiCausalLM(StreamingModel, SwitchesAdapters):
    """An ``ift export`` of a causal LM, run by onnxruntime-genai (registered through ``onnx``).
    An export built with LoRA inputs (``onnx/lora.py``) applies one adapter per generator."""

    backend = "onnx"
    capabilities = frozenset({"generate", "stream", "score", "steps"})
    structured_outputs = True
    serves_adapters = True

    def __init__(self, name: str, folder: Path, tokenizer: PreTrainedTokenizerBase, options: OnnxOptions):
        import onnxruntime_genai as og

        super().__init__(name)
        self.tokenizer = tokenizer
        self.batch_size = options.batch_size
        self.max_batch_tokens = options.max_batch_tokens
        config_values = _model_config(folder)
        eos = config_values.get("eos_token_id")
        self.stop_ids = end_of_turn_ids(tokenizer, eos if isinstance(eos, (int, list)) else None)
        self.context_length: int = config_values.get("context_length", 2048)
        if not self.stop_ids:
            raise ModelError(f"model '{name}' has no end-of-sequence token; generation cannot stop")
        self.pad_id = padding_id(tokenizer, self.stop_ids)
        vocabulary = config_values.get("vocab_size")
        width = vocabulary if isinstance(vocabulary, int) else None
        self.guidance = Guidance(name, tokenizer, self.stop_ids, width)
        self.device = "cuda" if pick_provider(options.device) == CUDA else "cpu"
        overlay: dict[str, Any] = {"eos_token_id": self.stop_ids, "pad_token_id": self.pad_id}
        if options.threads:
            overlay["decoder"] = {"session_options": {"intra_op_num_threads": options.threads}}
        with native_errors(name):
            config = og.Config(str(folder))
            config.clear_providers()
            if self.device == "cuda":
                config.append_provider("cuda")
            config.overlay(json.dumps({"model": overlay}))
            self.og_model = og.Model(config)
        self.adapters: set[str] = set()
        self._og_adapters: Any = None

    def close(self) -> None:
        """onnxruntime-genai frees a model's sessions when the last reference goes."""
        self._og_adapters = None
        del self.og_model
        gc.collect()

    def add_adapter(self, name: str, folder: Path) -> None:
        """Load an adapter exported by ``ift export`` (an ``og.Adapters`` file)."""
        if name in self.adapters:
            return
        import onnxruntime_genai as og

        try:
            if self._og_adapters is None:
                self._og_adapters = og.Adapters(self.og_model)
            self._og_adapters.load(str(folder / ONNX_ADAPTER_FILE), name)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AdapterError(f"adapter '{folder}' does not fit model '{self.name}': {first}") from None
        self.adapters.add(name)

    @classmethod
    def load(cls, name: str, source: str, options: OnnxOptions) -> GenaiCausalLM:
        from transformers import AutoTokenizer

        return cls(name, Path(source), AutoTokenizer.from_pretrained(source), options)

    def _padded(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        import numpy as np

        width = max(len(r) for r in rows)
        return np.array([list(r) + [self.pad_id] * (width - len(r)) for r in rows], dtype=np.int32)

    def _generator(
        self,
        prompts: Sequence[Sequence[int]],
        settings: GenerationSettings | None,
        room: int = 1,
        adapter: str | None = None,
    ) -> Any:
        """A generator over right-padded ``prompts``, ready for its first token, with ``adapter``
        (else the one of ``using_adapter``) applied; without ``settings``, with ``room`` for that
        many more tokens (for scoring)."""
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.og_model)
        width = max(len(p) for p in prompts)
        if width >= self.context_length:
            raise ModelError(
                f"model '{self.name}': a prompt of {width} tokens does not fit its context of "
                f"{self.context_length}; shorten the input"
            )
        options: dict[str, Any] = {
            "batch_size": len(prompts),
            "max_length": min(width + room, self.context_length),
        }
        if settings is not None:
            sampling = settings.temperature > 0
            options |= {
                "max_length": min(width + settings.max_new_tokens, self.context_length),
                "do_sample": sampling,
                "temperature": settings.temperature if sampling else 1.0,
                "top_p": settings.top_p,
                "top_k": 0,  # no top-k cut, as the PyTorch backend
                "repetition_penalty": settings.repetition_penalty,
            }
            if settings.seed is not None:
                options["random_seed"] = settings.seed
        with native_errors(self.name):
            params.set_search_options(**options)
            generator = og.Generator(self.og_model, params)
            adapter = adapter or self.active
            if adapter is not None:
                generator.set_active_adapter(self._og_adapters, adapter)
            generator.append_tokens(self._padded(prompts))
        return generator

    def _generate(
        self, prompts: Sequence[Prompt], settings: GenerationSettings, on_text: TextSink | None
    ) -> list[str]:
        return [row.text() for row in decode_to_end(self, prompts, settings, on_text)]

    def cohort_key(self, row: Row) -> Hashable:
        """One generator has one set of search options (its seed included) and one adapter."""
        return row.settings.model_copy(update={"max_new_tokens": 1}).model_dump_json(), row.adapter

    def start_cohort(self, rows: Sequence[Row]) -> GenaiCohort:
        return GenaiCohort(self, rows)

    def prompt_length(self, prompt: Prompt) -> int:
        return len(chat_ids(self.tokenizer, prompt))

    def prompt_logits(self, rows: Sequence[Sequence[int]]) -> Any:
        """The logits at every position of each row (one forward pass), a tensor of shape
        (rows, longest row, vocabulary); positions past a row's end are padding."""
        import numpy as np
        import torch

        generator = self._generator(rows, None)
        # A copy: the array is a view of memory the generator frees when it goes.
        logits = np.array(generator.get_output("logits"), dtype=np.float32, copy=True)
        del generator
        return torch.from_numpy(logits)

    def score(
        self, prompts: Sequence[Prompt], choices: Sequence[str], mean: bool = False
    ) -> list[list[float]]:
        """Sum (``mean``: mean per token) of the log-probabilities of each choice, followed by
        end of turn, as the answer.

        Each prompt runs once; each choice then continues from its KV cache and is rewound, so
        scoring k labels costs about one forward pass of the prompt, not k.
        """
        choice_ids = [text_ids(self.tokenizer, c) + self.stop_ids[:1] for c in choices]
        rows = []
        for prompt in prompts:
            picked = self._choice_logprobs(chat_ids(self.tokenizer, prompt), choice_ids)
            rows.append([sum(p) / len(p) if mean else sum(p) for p in picked])
        return rows

    def _choice_logprobs(self, prompt: list[int], choices: list[list[int]]) -> list[list[float]]:
        """For each choice, the log-probability of each of its tokens after ``prompt``."""
        import numpy as np
        import torch

        def logprobs(array: Any) -> Any:
            return torch.from_numpy(np.array(array, dtype=np.float32, copy=True)).log_softmax(-1)

        generator = self._generator([prompt], None, room=max(len(c) for c in choices))
        first = logprobs(generator.get_logits()[0, -1])  # predicts each choice's first token
        picked = []
        for choice in choices:
            scores = [float(first[choice[0]])]
            if len(choice) > 1:  # the last token (end of turn) is predicted, never fed
                with native_errors(self.name):
                    generator.append_tokens(np.array([choice[:-1]], dtype=np.int32))
                    steps = logprobs(generator.get_output("logits")[0])
                    generator.rewind_to(len(prompt))
                scores += [float(steps[i - 1, t]) for i, t in enumerate(choice) if i > 0]
            picked.append(scores)
        return picked

    def start_decoding(self, prompts: Sequence[Prompt]) -> GenaiSteps:
        return GenaiSteps(self, [chat_ids(self.tokenizer, p) for p in prompts])


class GenaiCohort(Cohort):
    """Rows decoded by one generator (``decoding.Cohort``). A generator's batch is fixed: rows
    that end stay in it unseen until the last one ends, and cohorts do not merge."""

    def __init__(self, model: GenaiCausalLM, rows: Sequence[Row]) -> None:
        self.model, self.slots, self.rows = model, list(rows), list(rows)  # slots: the generator's rows
        prompts = [chat_ids(model.tokenizer, row.prompt) for row in self.slots]
        for row, prompt in zip(self.slots, prompts):
            row.prompt_tokens = len(prompt)
        longest = max(row.settings.max_new_tokens for row in self.slots)
        settings = self.slots[0].settings.model_copy(update={"max_new_tokens": longest})
        model.guidance.start(self.slots)
        self.generator = model._generator(prompts, settings, adapter=self.slots[0].adapter)
        self.ended: set[int] = set()

    def step(self) -> list[Row]:
        with native_errors(self.model.name):
            if any(row.matcher is not None for row in self.rows):
                self._constrain()
            self.generator.generate_next_token()
            tokens = self.generator.get_next_tokens().tolist()
        tokenizer, stop_ids = self.model.tokenizer, self.model.stop_ids
        finished = [
            row
            for i, (row, token) in enumerate(zip(self.slots, tokens))
            if i not in self.ended and row.push(token, tokenizer, stop_ids)
        ]
        if self.generator.is_done():  # the context is full: every row still running ends here
            cut = [r for i, r in enumerate(self.slots) if i not in self.ended and r not in finished]
            for row in cut:
                row.end("length")
            finished += cut
        self.drop(finished)
        return finished

    def _constrain(self) -> None:
        """The next token's logits, masked for the constrained rows, back to the generator."""
        import numpy as np
        import torch

        last = self.generator.get_logits()[:, -1, :]
        logits = torch.from_numpy(np.array(last, dtype=np.float32, copy=True))
        self.model.guidance.mask(logits, self.slots)
        self.generator.set_logits(logits.numpy())

    def drop(self, rows: Iterable[Row]) -> None:
        leaving = {id(row) for row in rows}
        self.ended.update(i for i, row in enumerate(self.slots) if id(row) in leaving)
        self.rows = [row for i, row in enumerate(self.slots) if i not in self.ended]

    def merge(self, other: Cohort) -> bool:
        return False


class GenaiSteps:
    """Step-by-step decoding for token-level ensembles: next-token logits, then the chosen ids."""

    def __init__(self, model: GenaiCausalLM, prompts: Sequence[Sequence[int]]) -> None:
        self.model = model
        # Greedy over forced logits (see ``advance``), with room for as many steps as the
        # context allows; the caller stops first.
        self.generator = model._generator(prompts, GenerationSettings(max_new_tokens=32768))
        self.vocabulary = int(self.generator.get_logits().shape[-1])

    def logits(self) -> Any:
        import numpy as np
        import torch

        return torch.from_numpy(np.array(self.generator.get_logits()[:, -1, :], dtype=np.float32, copy=True))

    def advance(self, chosen: Sequence[int]) -> None:
        """The generator takes only one ``append_tokens`` per batch, so the chosen ids go in as
        logits that leave its greedy search no other choice."""
        import numpy as np

        forced = np.full((len(chosen), self.vocabulary), -np.inf, dtype=np.float32)
        forced[np.arange(len(chosen)), list(chosen)] = 0.0
        with native_errors(self.model.name):
            self.generator.set_logits(forced)
            self.generator.generate_next_token()
