"""A node's model call, as layers of policy around the model (outermost first):

- ``cached``: answers found in the answer cache are used; the rest go on, and what comes back is
  stored;
- ``isolated``: a failed batched call is tried again prompt by prompt, so an error stays with the
  prompt that causes it; failures become ``Failure`` values, never exceptions;
- ``with_retries``: a call that raises is tried again after the node's backoff;
- ``with_timeout``: a call that runs past the node's timeout raises ``CallTimedOut``;
- the model itself (``answer_prompts``): one batched ``generate`` or ``classify``.

A timed-out call is neither retried nor split: Python cannot stop the thread, which goes on
holding the model, so every new call would queue behind it and time out too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..ensemble import LabelEnsembleModel, TextEnsembleModel
from ..errors import IftError
from ..models.base import Model, Prompt, StreamsText, TextSink
from ..models.resolve import ModelPool
from ..templates import AnswerForm
from .cache import AnswerCache
from .graph import BoundNode
from .spec import RetrySpec

Messages = list[dict[str, str]]


@dataclass
class Answer:
    """A model's answer to one prompt, before parsing (what the cache stores)."""

    raw: str | None = None
    label: str | None = None
    probabilities: dict[str, float] | None = None
    members: dict[str, Any] | None = None
    cached: bool = False


def _argmax(probabilities: Mapping[str, float]) -> str:
    # max() keeps the first of equal values: ties go to the lowest label index.
    return max(probabilities, key=probabilities.__getitem__)


def answer_prompts(
    bound: BoundNode, prompts: Sequence[Prompt], pool: ModelPool, on_text: TextSink | None = None
) -> list[Answer]:
    """Call the node's model (or ensemble) once on all ``prompts``; a model that streams tokens
    hands ``on_text(prompt index, new text)`` the answers as they grow."""
    template = bound.template
    model = pool.get(bound.model)
    prompts = list(prompts)
    if template.answer is AnswerForm.LABEL and model.can("classify"):
        labels = template.labels
        ensemble_members: Sequence[Model] = ()
        if isinstance(model, LabelEnsembleModel):
            rows, member_rows = model.classify_with_members(prompts, labels)
            ensemble_members = model.members
        else:
            rows, member_rows = model.classify(prompts, labels), None
        answers = []
        for i, row in enumerate(rows):
            probabilities = dict(zip(labels, row))
            members = None
            if member_rows is not None:
                members = {}
                for member, member_row in zip(ensemble_members, member_rows):
                    probs = dict(zip(labels, member_row[i]))
                    members[member.name] = {"output": _argmax(probs), "probabilities": probs}
            answers.append(Answer(None, _argmax(probabilities), probabilities, members))
        return answers
    if isinstance(model, TextEnsembleModel):
        texts, details = model.generate_with_members(prompts, bound.generation)
        return [Answer(t, members={"details": d} if d is not None else None) for t, d in zip(texts, details)]
    if on_text is not None and isinstance(model, StreamsText):
        return [Answer(text) for text in model.generate_stream(prompts, bound.generation, on_text)]
    return [Answer(text) for text in model.generate(prompts, bound.generation)]


@dataclass(frozen=True)
class Failure:
    """Why a prompt got no answer (the message an item's error carries)."""

    message: str

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        return cls(str(exc) if isinstance(exc, IftError) else f"{type(exc).__name__}: {exc}")


Outcome = Answer | Failure


class CallTimedOut(TimeoutError):
    """A model call ran past its node's timeout; it goes on in the background."""


def call_with_timeout(function: Callable[[], Any], seconds: float | None) -> Any:
    """``function()``, or ``CallTimedOut`` after ``seconds``. Python cannot stop a thread: a call
    that times out finishes in the background and its answer is dropped."""
    if seconds is None:
        return function()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = function()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="ift-call")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise CallTimedOut(f"the model call took longer than the node's timeout of {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


#: A call that answers every prompt or raises; ``OutcomeCall`` never raises. Both take the
#: prompts and an optional ``TextSink`` for streamed text (indices are positions in the prompts).
Call = Callable[[list[Messages], TextSink | None], list[Answer]]
OutcomeCall = Callable[[list[Messages], TextSink | None], list[Outcome]]


def shifted(on_text: TextSink | None, positions: Sequence[int]) -> TextSink | None:
    """A sink for a sub-list of the prompts, reporting under their places in the whole list."""
    if on_text is None:
        return None
    sink = on_text
    return lambda index, text: sink(positions[index], text)


def with_timeout(call: Call, seconds: float | None) -> Call:
    if seconds is None:
        return call
    return lambda prompts, on_text: call_with_timeout(lambda: call(prompts, on_text), seconds)


def with_retries(call: Call, retry: RetrySpec) -> Call:
    def attempts(prompts: list[Messages], on_text: TextSink | None) -> list[Answer]:
        for attempt in range(retry.attempts - 1):
            try:
                return call(prompts, on_text)
            except CallTimedOut:
                raise
            except Exception:  # noqa: BLE001 - a model may raise anything; the last try reports it
                time.sleep(retry.wait(attempt))
        return call(prompts, on_text)

    return attempts


def isolated(call: Call) -> OutcomeCall:
    def outcomes(prompts: list[Messages], on_text: TextSink | None) -> list[Outcome]:
        try:
            return list(call(prompts, on_text))
        except CallTimedOut as exc:
            return [Failure.of(exc)] * len(prompts)
        except Exception as exc:  # noqa: BLE001 - a model may raise anything; it is reported
            if len(prompts) == 1:
                return [Failure.of(exc)]
            return [outcomes([prompt], shifted(on_text, [i]))[0] for i, prompt in enumerate(prompts)]

    return outcomes


def cached(call: OutcomeCall, cache: AnswerCache, parts: dict[str, Any], node: str) -> OutcomeCall:
    """``parts``: what besides the prompt keys an answer (model identity, settings...)."""

    def outcomes(prompts: list[Messages], on_text: TextSink | None) -> list[Outcome]:
        keys = [AnswerCache.key(**parts, messages=p) for p in prompts]
        found: list[Outcome | None] = [None] * len(prompts)
        for i, key in enumerate(keys):
            hit = cache.get(key)
            found[i] = Answer(**{**hit, "cached": True}) if hit is not None else None
        misses = [i for i, answer in enumerate(found) if answer is None]
        computed = call([prompts[i] for i in misses], shifted(on_text, misses)) if misses else []
        for i, outcome in zip(misses, computed):
            found[i] = outcome
            if isinstance(outcome, Answer):
                try:
                    cache.put(keys[i], {**asdict(outcome), "cached": False})
                except (OSError, TypeError, ValueError) as exc:  # a full disk must not fail the run
                    cache.warn_once(f"answer cache: could not store an answer of node '{node}': {exc}")
        return [answer if answer is not None else Failure("no answer") for answer in found]

    return outcomes


def node_call(
    bound: BoundNode, pool: ModelPool, cache: tuple[AnswerCache, dict[str, Any]] | None = None
) -> OutcomeCall:
    """The layers above around ``bound``'s model; ``cache``: the cache and the key parts."""
    call = with_retries(
        with_timeout(
            lambda prompts, on_text: answer_prompts(bound, prompts, pool, on_text), bound.spec.timeout
        ),
        bound.spec.retry,
    )
    outcomes = isolated(call)
    return cached(outcomes, *cache, bound.spec.id) if cache is not None else outcomes
