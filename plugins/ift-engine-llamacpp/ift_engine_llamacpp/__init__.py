"""The ``llama-cpp`` backend: GGUF models through llama-cpp-python (generate, score, classify).

A workflow switches to it by changing the backend, for example::

    model: {name: smollm2-135m-instruct, backend: llama-cpp}
    model: {name: ./models/my-model.Q4_K_M.gguf, backend: llama-cpp, options: {n_threads: 4}}
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ift_engine.plugin import (
    GenerationSettings,
    Model,
    ModelError,
    Register,
    chat_segments,
    embedded_gguf,
    hookimpl,
)

__version__ = "0.1.0"

# Aliases whose GGUF file we know how to find (the engine's own alias converts to PyTorch).
GGUF_ALIASES = {"smollm2-135m-instruct"}


class LlamaCppOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_ctx: int = Field(1024, ge=64, description="context window in tokens")
    n_threads: int | None = Field(None, ge=1, description="CPU threads (default: llama.cpp's choice)")
    n_gpu_layers: int = Field(0, description="layers offloaded to a GPU build of llama.cpp (-1: all)")


def gguf_path(name: str) -> Path:
    if name in GGUF_ALIASES:
        return embedded_gguf()
    path = Path(name).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        raise ModelError(
            f"backend 'llama-cpp' needs a .gguf file or one of {sorted(GGUF_ALIASES)}, not {name!r}"
        )
    return path


class LlamaCppModel(Model):
    backend = "llama-cpp"
    capabilities = frozenset({"generate", "score"})  # classify: the default, from score
    options_model = LlamaCppOptions
    locates_weights = False  # it reads GGUF files itself

    def __init__(self, name: str, llm: Any) -> None:
        super().__init__(name)
        self.llm = llm
        self._lock = threading.Lock()
        template = llm.metadata.get("tokenizer.chat_template")
        self._chat_template = None
        if template:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            self._chat_template = ImmutableSandboxedEnvironment().from_string(template)

    def close(self) -> None:
        self.llm.close()  # llama-cpp-python frees the model and its context

    @classmethod
    def load(cls, name: str, source: str, options: LlamaCppOptions) -> LlamaCppModel:
        from llama_cpp import Llama

        llm = Llama(
            model_path=str(gguf_path(name)),
            n_ctx=options.n_ctx,
            n_threads=options.n_threads,
            n_gpu_layers=options.n_gpu_layers,
            logits_all=True,
            verbose=False,
        )
        return cls(name, llm)

    def _prompt_text(self, messages: Sequence[dict[str, str]]) -> str:
        if self._chat_template is None:
            return "\n\n".join(m["content"] for m in messages) + "\n\n"
        return self._chat_template.render(messages=list(messages), add_generation_prompt=True)

    def _prompt_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The chat template's control tokens as such; message contents as plain text."""
        tokens: list[int] = []
        for text, content in chat_segments(self._prompt_text, messages):
            tokens += self.llm.tokenize(text.encode(), add_bos=False, special=not content)
        return tokens

    def _stop_tokens(self) -> set[int]:
        stops = {self.llm.token_eos()}
        for marker in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
            ids = self.llm.tokenize(marker.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                stops.add(ids[0])
        return stops

    def generate(
        self, prompts: Sequence[Sequence[dict[str, str]]], settings: GenerationSettings
    ) -> list[str]:
        answers = []
        stops = self._stop_tokens()
        with self._lock:
            for messages in prompts:
                tokens = self._prompt_tokens(messages)
                if settings.seed is not None:
                    self.llm.set_seed(settings.seed)
                sampling = settings.temperature > 0
                out: list[int] = []
                for token in self.llm.generate(
                    tokens,
                    reset=True,
                    temp=settings.temperature if sampling else 0.0,
                    top_p=settings.top_p,
                    top_k=0 if sampling else 1,
                    repeat_penalty=settings.repetition_penalty,
                ):
                    if token in stops or len(out) >= settings.max_new_tokens:
                        break
                    out.append(token)
                answers.append(self.llm.detokenize(out).decode("utf-8", errors="ignore").strip())
        return answers

    def score(
        self, prompts: Sequence[Sequence[dict[str, str]]], choices: Sequence[str], mean: bool = False
    ) -> list[list[float]]:
        """Log-likelihood of each choice (followed by end of turn) as the answer."""
        import numpy as np

        end = self.llm.token_eos()
        for marker in ("<|im_end|>", "<|eot_id|>"):
            ids = self.llm.tokenize(marker.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                end = ids[0]
                break
        rows = []
        with self._lock:
            for messages in prompts:
                prompt = self._prompt_tokens(messages)
                row = []
                for choice in choices:
                    answer = self.llm.tokenize(choice.encode(), add_bos=False, special=False) + [end]
                    self.llm.reset()
                    self.llm.eval(prompt + answer)
                    logits = np.asarray(self.llm.eval_logits)  # one row per evaluated token
                    total = 0.0
                    for i, token in enumerate(answer):
                        step = logits[len(prompt) - 1 + i]
                        top = step.max()
                        total += float(step[token] - top - math.log(np.exp(step - top).sum()))
                    row.append(total / len(answer) if mean else total)
                rows.append(row)
        return rows


@hookimpl
def register_models(register: Register[type[Model]]) -> None:
    register(LlamaCppModel)
