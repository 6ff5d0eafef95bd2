"""A node's model call: prompts to the model's worker, through the node's policies.

- **cache**: answers found in the answer cache are used; the rest go to the model, and what
  comes back is stored;
- **timeout**: the call's deadline; past it the call is cancelled (the worker drops its rows at
  the next decode step) and its prompts fail with a clear message, never retried;
- **retries**: prompts that failed are submitted again after the node's backoff;
- **isolation**: done by the worker: a failed batched call is repeated prompt by prompt, so an
  error stays with the prompt that causes it.

Everything here runs on the run's loop (``loops.py``); the worker's answers arrive there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any, cast

from ..models.base import AnswersWithMembers, GenerationSettings, Model, Prompt, TextSink
from ..models.resolve import ModelPool
from ..models.worker import Completion, Failure
from ..templates import AnswerForm
from .bound import BoundNode
from .cache import AnswerCache
from .loops import Loop

Messages = list[dict[str, str]]


@dataclass
class Answer:
    """A model's answer to one prompt, before parsing (what the cache stores)."""

    raw: str | None = None
    label: str | None = None
    probabilities: dict[str, float] | None = None
    members: dict[str, Any] | None = None
    cached: bool = False


Outcome = Answer | Failure


def _argmax(probabilities: Mapping[str, float]) -> str:
    # max() keeps the first of equal values: ties go to the lowest label index.
    return max(probabilities, key=probabilities.__getitem__)


def classify_answers(model: Model, prompts: Sequence[Prompt], labels: Sequence[str]) -> list[Answer]:
    """Label answers with their probabilities (an ensemble's members' too)."""
    if model.can("members"):
        rows, member_rows = cast(AnswersWithMembers, model).classify_with_members(prompts, labels)
    else:
        rows, member_rows = model.classify(prompts, labels), None
    answers = []
    for i, row in enumerate(rows):
        probabilities = dict(zip(labels, row))
        members = None
        if member_rows is not None:
            members = {}
            for member, member_row in zip(cast(AnswersWithMembers, model).members, member_rows):
                probs = dict(zip(labels, member_row[i]))
                members[member.name] = {"output": _argmax(probs), "probabilities": probs}
        answers.append(Answer(None, _argmax(probabilities), probabilities, members))
    return answers


def submit(
    bound: BoundNode,
    settings: GenerationSettings,
    pool: ModelPool,
    prompts: list[Messages],
    on_text: TextSink | None,
) -> Future[Any]:
    """The node's prompts to its model's worker: labels scored where the model can classify,
    an ensemble's answers with its members', else text generated under ``settings``."""
    template = bound.template
    worker = pool.worker(bound.model)
    model = worker.model
    if template.answer is AnswerForm.LABEL and model.can("classify"):
        labels = list(template.labels)
        # Its own key: these jobs answer with ``Answer``s, worker.classify's with probabilities.
        key = ("label answers", *labels)
        return worker.submit(key, lambda m, p, _: classify_answers(m, p, labels), prompts)
    if model.can("members"):

        def with_members(m: Any, p: list[Prompt], _: Any) -> list[Answer]:
            texts, details = m.generate_with_members(p, settings)
            return [Answer(t, members=None if d is None else {"details": d}) for t, d in zip(texts, details)]

        return worker.submit(("members", settings.model_dump_json()), with_members, prompts)
    return worker.generate(prompts, settings, on_text, bound.constraint)


def as_outcome(value: Any, bound: BoundNode, settings: GenerationSettings) -> Outcome:
    """A model's outcome as the node sees it: a constrained answer cut short is a failure."""
    if not isinstance(value, Completion):
        return value  # type: ignore[no-any-return]
    if value.finish == "length" and bound.constraint is not None:
        return Failure(
            f"the answer was cut at max_new_tokens ({settings.max_new_tokens}) before it was complete "
            f"({value.text[:60]!r}...); raise generation.max_new_tokens, or bound the schema "
            "(maxLength, maximum, maxItems)"
        )
    return Answer(value.text)


class NodeCall:
    """One node's answers to ``prompts``, handed to ``done(outcomes)`` on the loop."""

    def __init__(
        self,
        bound: BoundNode,
        settings: GenerationSettings,
        pool: ModelPool,
        loop: Loop,
        cache: tuple[AnswerCache, dict[str, Any]] | None,
        done: Callable[[list[Outcome]], None],
    ) -> None:
        self.bound, self.settings, self.pool, self.loop = bound, settings, pool, loop
        self.cache, self.done = cache, done
        self.outcomes: list[Outcome | None] = []
        self.keys: list[str] = []
        self.attempt = 0
        self.future: Future[Any] | None = None
        self.given_up = False

    def cancel(self) -> None:
        """Give up: the prompts still with the model leave its batch at the next step, and no
        retry is sent."""
        self.given_up = True
        if self.future is not None:
            self.future.cancel()

    def start(self, prompts: list[Messages], on_text: TextSink | None) -> None:
        self.prompts, self.on_text = prompts, on_text
        self.outcomes = [None] * len(prompts)
        if self.cache is not None:
            cache, parts = self.cache
            self.keys = [AnswerCache.key(**parts, messages=p) for p in prompts]
            for i, key in enumerate(self.keys):
                hit = cache.get(key)
                self.outcomes[i] = Answer(**{**hit, "cached": True}) if hit is not None else None
        self._ask([i for i, outcome in enumerate(self.outcomes) if outcome is None])

    def _ask(self, places: list[int]) -> None:
        if self.given_up:
            return
        if not places:  # handed over on a later turn of the loop: cached chains do not nest
            outcomes = [o if o is not None else Failure("no answer") for o in self.outcomes]
            self.loop.post(lambda: self.done(outcomes))
            return
        sink = self.on_text
        shifted = None if sink is None else (lambda index, text: sink(places[index], text))
        try:
            future = submit(self.bound, self.settings, self.pool, [self.prompts[i] for i in places], shifted)
        except Exception as exc:  # noqa: BLE001 - loading failed: every prompt reports it
            self._answered(places, [Failure.of(exc)] * len(places))
            return
        self.future = future
        timeout = self.bound.spec.timeout
        stop_timer = self.loop.later(timeout, future.cancel) if timeout is not None else None
        future.add_done_callback(lambda f: self.loop.post(lambda: self._returned(places, f, stop_timer)))

    def _returned(
        self, places: list[int], future: Future[Any], stop_timer: Callable[[], None] | None
    ) -> None:
        if stop_timer is not None:
            stop_timer()
        if future.cancelled():
            message = f"the model call took longer than the node's timeout of {self.bound.spec.timeout:g} s"
            for i in places:
                self.outcomes[i] = Failure(message)
            self._ask([])
            return
        self._answered(places, [as_outcome(v, self.bound, self.settings) for v in future.result()])

    def _answered(self, places: list[int], outcomes: list[Outcome]) -> None:
        failed = []
        for i, outcome in zip(places, outcomes):
            self.outcomes[i] = outcome
            if isinstance(outcome, Failure):
                failed.append(i)
            elif self.cache is not None:
                self._store(i, outcome)
        retry = self.bound.spec.retry
        self.attempt += 1
        if failed and self.attempt < retry.attempts:
            self.loop.later(retry.wait(self.attempt - 1), lambda: self._ask(failed))
        else:
            self._ask([])

    def _store(self, index: int, answer: Answer) -> None:
        assert self.cache is not None
        cache = self.cache[0]
        try:
            cache.put(self.keys[index], {**asdict(answer), "cached": False})
        except (OSError, TypeError, ValueError) as exc:  # a full disk must not fail the run
            cache.warn_once(f"answer cache: could not store an answer of node '{self.bound.spec.id}': {exc}")
