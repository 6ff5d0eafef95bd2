"""The ``mock`` backend: deterministic canned answers that records its calls.

Public for plugin authors' tests: ``MockModel(answers={"outline": "- a\\n- b"})`` answers any
prompt containing "outline" with two lines, and ``model.calls`` lists what it was asked.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ModelError
from ..parsers import find_label
from .base import GenerationSettings, Model, Prompt, TextSink


class MockOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answers: dict[str, str] = Field(
        default_factory=dict, description="prompt substring -> answer; the first match wins"
    )
    default: str | None = Field(None, description="answer when nothing matches; None echoes")
    delay: float = Field(0.0, ge=0.0, description="seconds each call sleeps (concurrency tests)")
    errors: dict[str, str] = Field(
        default_factory=dict, description="prompt substring -> error message the call raises"
    )
    fail_first: int = Field(0, ge=0, description="the first N calls raise (retry tests)")


@dataclass(frozen=True)
class MockCall:
    method: str
    prompts: tuple[str, ...]
    started: float
    ended: float


class MockModel(Model):
    backend = "mock"
    capabilities = frozenset({"generate", "stream", "classify"})
    options_model = MockOptions
    locates_weights = False
    #: Its canned answers are the test's to write: they are parsed and validated against a
    #: node's schema, labels or regex like any answer, never constrained.
    structured_outputs = True

    def __init__(
        self,
        name: str = "mock",
        answers: dict[str, str] | None = None,
        default: str | None = None,
        delay: float = 0.0,
        errors: dict[str, str] | None = None,
        fail_first: int = 0,
    ) -> None:
        super().__init__(name)
        self.answers = dict(answers or {})
        self.default = default
        self.delay = delay
        self.errors = dict(errors or {})
        self.fail_first = fail_first
        self.calls: list[MockCall] = []
        self._lock = threading.Lock()

    @classmethod
    def load(cls, name: str, source: str, options: MockOptions) -> MockModel:
        return cls(name, options.answers, options.default, options.delay, options.errors, options.fail_first)

    def answer(self, prompt: Prompt) -> str:
        text = "\n".join(m["content"] for m in prompt)
        for key, answer in self.answers.items():
            if key in text:
                return answer
        return self.default if self.default is not None else prompt[-1]["content"]

    def _record(self, method: str, prompts: Sequence[Prompt], started: float) -> None:
        if self.delay:
            time.sleep(self.delay)
        call = MockCall(method, tuple(p[-1]["content"] for p in prompts), started, time.perf_counter())
        with self._lock:
            self.calls.append(call)
            failing = len(self.calls) <= self.fail_first
        if failing:
            raise ModelError(f"mock call {len(self.calls)} fails (fail_first={self.fail_first})")
        for prompt in prompts:
            text = "\n".join(m["content"] for m in prompt)
            for key, message in self.errors.items():
                if key in text:
                    raise ModelError(message)

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        self._record("generate", prompts, time.perf_counter())
        return [self.answer(p) for p in prompts]

    def generate_stream(
        self, prompts: Sequence[Prompt], settings: GenerationSettings, on_text: TextSink
    ) -> list[str]:
        """``generate``, handing out each answer word by word (round-robin over the prompts)."""
        answers = self.generate(prompts, settings)
        pieces = [re.findall(r"\S+\s*", answer) for answer in answers]
        for step in range(max((len(p) for p in pieces), default=0)):
            for index, words in enumerate(pieces):
                if step < len(words):
                    on_text(index, words[step])
        return answers

    def classify(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> list[list[float]]:
        """All probability on the first label the canned answer names; uniform if none."""
        self._record("classify", prompts, time.perf_counter())
        rows = []
        for prompt in prompts:
            best = find_label(self.answer(prompt), labels)
            if best is None:
                rows.append([1.0 / len(labels)] * len(labels))
            else:
                rows.append([1.0 if i == best else 0.0 for i in range(len(labels))])
        return rows
