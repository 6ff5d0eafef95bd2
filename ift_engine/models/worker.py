"""One worker per loaded model: the only thread that runs it.

Every caller (workflow nodes, batch runs, the service, ensembles' members) submits prompts to
the model's worker and gets a ``concurrent.futures.Future`` back; nothing else touches the
model. Whenever the worker is free it takes everything that waits:

- **generation on a model that batches continuously** (``decoding.BatchesContinuously``): each
  prompt becomes a ``Row``. Waiting rows start in a new cohort, merged into a running cohort of
  the same settings where the backend can, while fewer than the model's ``batch_size`` rows run;
  then every running cohort advances one decode step. A row leaves the moment it finishes; the
  rows of a request whose future was cancelled (a client went away, a deadline passed) leave at
  the next step.
- **any other work** (classification, scoring, ensembles, generation on other backends): jobs
  with one key (method and settings) merge into one batched call of up to ``batch_size``
  prompts, between decode steps.

A call that raises is repeated prompt by prompt, so an error stays with the prompt that causes
it: each prompt's outcome is its answer or a ``Failure``, and a future never fails as a whole.

PyTorch runs its CPU kernels on an OpenMP team per calling thread: a worker is a long-lived
thread, so its team is made once (measured on a 2-core AMD EPYC: batch-16 generation within 5%
of the main thread's speed).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..errors import IftError, ModelError
from .base import DecodingSteps, GenerationSettings, Model, Prompt, TextSink
from .decoding import BatchesContinuously, Cohort, Row

if TYPE_CHECKING:
    from ..structured import Constraint

R = TypeVar("R")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """Why a prompt got no answer (the message an item's error carries)."""

    message: str

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        return cls(str(exc) if isinstance(exc, IftError) else f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Completion:
    """A generated answer, why it ended (``stop`` or ``length``) and its token counts (None
    where the backend does not count them)."""

    text: str
    finish: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


#: A batched model call: (model, prompts, streamed text sink or None) -> one answer per prompt.
BatchCall = Callable[[Any, list[Prompt], TextSink | None], list[Any]]


@dataclass
class WorkerStats:
    """What the service's metrics see: rows per decode step or prompts per batched call, the
    number of prompts waiting, and tokens generated."""

    on_batch: Callable[[int], None] = lambda size: None
    on_depth: Callable[[int], None] = lambda depth: None
    on_tokens: Callable[[int], None] = lambda count: None
    #: For each generated answer: seconds from submission to its first token, and seconds per
    #: output token after that.
    on_answer: Callable[[float, float], None] = lambda first_token, per_token: None


@dataclass
class _Job:
    """Prompts submitted together; ``outcomes`` fill in as they are answered."""

    prompts: list[Prompt]
    on_text: TextSink | None
    future: Future[list[Any]]
    key: Hashable = None
    call: BatchCall | None = None  # None: generation rows (continuous batching)
    outcomes: list[Any] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    left: int = 0
    taken: int = 0  # prompts already handed to a batched call

    def deliver(self, index: int, outcome: Any) -> None:
        self.outcomes[index] = outcome
        self.left -= 1
        if self.left == 0:
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile: nobody waits
                self.future.set_result(self.outcomes)


#: What the worker's inbox holds: jobs, functions to run, and None (close).
_Entry = _Job | tuple[Callable[[], Any], Future[Any]] | None


def _completion(row: Row) -> Completion:
    return Completion(row.text(), row.finish or "stop", row.prompt_tokens, len(row.tokens))


class ModelWorker:
    """The thread that owns ``model`` (see the module docstring)."""

    def __init__(self, model: Model, stats: WorkerStats | None = None) -> None:
        self.model = model
        self.max_batch: int = getattr(model, "batch_size", 16)
        self.stats = stats or WorkerStats()
        self._inbox: queue.SimpleQueue[_Entry] = queue.SimpleQueue()
        self._rows: deque[tuple[_Job, int]] = deque()  # generation rows waiting for a cohort
        self._jobs: list[_Job] = []  # batched calls waiting
        self._cohorts: list[Cohort] = []
        self._owner: dict[int, tuple[_Job, int]] = {}  # id(row) -> its job and place
        self._starting: list[tuple[_Job, int]] = []  # rows taken from the queue, not yet in a cohort
        self._closed = False
        self._closing = threading.Lock()
        self._cancellations = False
        self._thread = threading.Thread(target=self._run, name=f"ift-model:{model.name}", daemon=True)
        self._thread.start()

    # -- submitting -----------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Prompt],
        settings: GenerationSettings,
        on_text: TextSink | None = None,
        constraint: Constraint | None = None,
        adapter: str | None = None,
    ) -> Future[list[Completion | Failure]]:
        """Generated answers; ``on_text(prompt index, new text)`` as they grow. Decoding is
        limited to ``constraint`` on models that batch continuously; others (the mock) answer
        as they do, and their answers are checked when parsed. ``adapter``: the LoRA adapter
        (loaded into the model) the rows are decoded with."""
        if not isinstance(self.model, BatchesContinuously):
            key = ("generate", settings.model_dump_json())
            return self.submit(key, _generate_call(settings), prompts, on_text)
        job = self._job(prompts, on_text)

        def sink(index: int) -> Callable[[str], None] | None:
            return None if on_text is None else lambda text: on_text(index, text)

        job.rows = [Row(p, settings, sink(i), constraint, adapter) for i, p in enumerate(job.prompts)]
        self._put(job)
        return job.future

    def classify(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> Future[list[Any]]:
        """Each prompt's label probabilities (a list of floats, or a ``Failure``), batched with
        every other ``classify`` of the same labels."""
        return self.submit(*_classify_job(labels), prompts)

    def submit(
        self, key: Hashable, call: BatchCall, prompts: Sequence[Prompt], on_text: TextSink | None = None
    ) -> Future[list[Any]]:
        """``call(model, prompts, on_text)`` batched with the waiting jobs of the same ``key``:
        jobs of one key must make the same call (a key names what the call computes)."""
        job = self._job(prompts, on_text)
        job.key, job.call = key, call
        self._put(job)
        return job.future

    def run(self, function: Callable[[], R]) -> Future[R]:
        """``function()`` on the worker, between batches (loading, step-by-step ensembles)."""
        future: Future[R] = Future()
        self._put((function, future))
        return future

    def _job(self, prompts: Sequence[Prompt], on_text: TextSink | None) -> _Job:
        prompts = list(prompts)
        job = _Job(prompts, on_text, Future(), outcomes=[None] * len(prompts), left=len(prompts))
        if not prompts:
            job.future.set_result([])
        job.future.add_done_callback(self._noticed)
        return job

    def _noticed(self, future: Future[Any]) -> None:
        if future.cancelled():
            self._cancellations = True  # the loop drops cancelled work at its next turn

    def _put(self, entry: _Entry) -> None:
        with self._closing:
            if self._closed:
                raise IftError(f"model '{self.model.name}' is closed")
            self._inbox.put(entry)

    def close(self) -> None:
        """Stop after the work already submitted."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
            self._inbox.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # -- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        with self.model.inference():
            while self._take():
                try:
                    self._forget_cancelled()
                    self._start_rows()
                    self._run_batched_call()
                    for cohort in list(self._cohorts):
                        self._step(cohort)
                except Exception as exc:  # noqa: BLE001 - a bug here must fail the work, not hang it
                    log.exception("model '%s': the worker failed", self.model.name)
                    self._fail_everything(Failure(f"internal error in the worker: {exc!r}; this is a bug"))
        self._fail_everything(Failure(f"model '{self.model.name}' is closed"))  # anything left

    def _fail_everything(self, failure: Failure) -> None:
        while True:
            try:
                entry = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(entry, tuple):
                entry[1].set_exception(IftError(failure.message))
            elif entry is not None:
                self._file(entry)
        for job, index in [*self._rows, *self._starting, *self._owner.values()]:
            job.deliver(index, failure)
        for job in self._jobs:
            for index in range(job.taken, len(job.prompts)):
                job.deliver(index, failure)
        self._rows, self._jobs, self._cohorts, self._owner, self._starting = deque(), [], [], {}, []

    def _busy(self) -> bool:
        return bool(self._cohorts or self._rows or self._jobs)

    def _take(self) -> bool:
        """Move what was submitted into the waiting lists (waiting for some when idle); False
        once closed and done."""
        while True:
            try:
                entry = self._inbox.get(block=not (self._busy() or self._closed))
            except queue.Empty:
                break
            if entry is None:
                self._closed = True
            elif isinstance(entry, tuple):
                function, future = entry
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(function())
                    except BaseException as exc:  # handed to the caller
                        future.set_exception(exc)
            elif not entry.future.done():
                self._file(entry)
        self.stats.on_depth(len(self._rows) + sum(len(j.prompts) - j.taken for j in self._jobs))
        return self._busy() or not self._closed

    def _file(self, job: _Job) -> None:
        """A submitted job into its waiting list: its rows, or the batched calls."""
        if job.call is None:
            self._rows.extend((job, i) for i in range(len(job.rows)))
        else:
            self._jobs.append(job)

    def _forget_cancelled(self) -> None:
        """Rows and jobs whose future was cancelled leave now, freeing their places."""
        if not self._cancellations:
            return
        self._cancellations = False
        self._rows = deque((job, i) for job, i in self._rows if not job.future.cancelled())
        self._jobs = [job for job in self._jobs if not job.future.cancelled()]
        for cohort in self._cohorts:
            gone = [row for row in cohort.rows if self._owner[id(row)][0].future.cancelled()]
            if gone:
                cohort.drop(gone)
                for row in gone:
                    del self._owner[id(row)]
        self._cohorts = [c for c in self._cohorts if c.rows]

    # -- continuous batching --------------------------------------------------------------------

    def _start_rows(self) -> None:
        """Start waiting rows (as many as there is room for) in cohorts by settings."""
        if not self._rows:
            return
        room = self.max_batch - sum(len(c.slots) for c in self._cohorts)
        tokens = self._token_room()
        model: Any = self.model
        groups: dict[Hashable, list[tuple[_Job, int]]] = {}
        while self._rows and room > 0:
            job, index = self._rows[0]
            if tokens is not None:
                need = self._reserved(job.rows[index])
                if need > tokens and (self._cohorts or groups):  # a row alone always runs
                    break
                tokens -= need
            self._rows.popleft()
            self._starting.append((job, index))  # failed with the rest if anything below raises
            groups.setdefault(model.cohort_key(job.rows[index]), []).append((job, index))
            room -= 1
        for entries in groups.values():
            cohort = self._started([job.rows[i] for job, i in entries], entries)
            del self._starting[: len(entries)]
            if cohort is None:
                continue
            for entry in entries:
                self._owner[id(entry[0].rows[entry[1]])] = entry
            key = model.cohort_key(cohort.rows[0])
            running = next((c for c in self._cohorts if model.cohort_key(c.rows[0]) == key), None)
            if running is None or not running.merge(cohort):
                self._cohorts.append(cohort)

    def _token_room(self) -> int | None:
        """Tokens the running rows leave of the model's ``max_batch_tokens`` (None: no limit)."""
        limit = cast(BatchesContinuously, self.model).max_batch_tokens
        if limit is None:
            return None
        return limit - sum(self._reserved(row) for cohort in self._cohorts for row in cohort.slots)

    def _reserved(self, row: Row) -> int:
        """What a row may come to hold: its prompt and every token it may add."""
        if not row.prompt_tokens:
            try:
                row.prompt_tokens = cast(BatchesContinuously, self.model).prompt_length(row.prompt)
            except Exception:  # noqa: BLE001 - the row fails with its own error when it starts
                return 0
        return row.prompt_tokens + row.settings.max_new_tokens

    def _started(self, rows: list[Row], entries: list[tuple[_Job, int]]) -> Cohort | None:
        """A cohort of ``rows``; when prefilling them together fails, each row alone."""
        model: Any = self.model
        try:
            return model.start_cohort(rows)  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - a model may raise anything; it is reported
            if len(rows) == 1:
                entries[0][0].deliver(entries[0][1], Failure.of(exc))
                return None
        for row, entry in zip(rows, entries):
            cohort = self._started([row], [entry])
            if cohort is not None:
                self._cohorts.append(cohort)
                self._owner[id(row)] = entry
        return None

    def _step(self, cohort: Cohort) -> None:
        self.stats.on_batch(len(cohort.rows))
        try:
            finished = cohort.step()
        except Exception as exc:  # noqa: BLE001 - the cohort's rows fail, the worker goes on
            finished, failure = list(cohort.rows), Failure.of(exc)
            cohort.rows = []
            for row in finished:
                job, index = self._owner.pop(id(row))
                job.deliver(index, failure)
            finished = []
        self.stats.on_tokens(len(cohort.rows) + len(finished))
        for row in finished:
            job, index = self._owner.pop(id(row))
            self._time(row)
            job.deliver(index, _completion(row))
        if not cohort.rows:
            self._cohorts.remove(cohort)

    def _time(self, row: Row) -> None:
        first = row.first_token or time.perf_counter()
        later = len(row.tokens) - 1
        per_token = (time.perf_counter() - first) / later if later > 0 else 0.0
        self.stats.on_answer(first - row.submitted, per_token)

    # -- batched calls --------------------------------------------------------------------------

    def _run_batched_call(self) -> None:
        """One call of up to ``batch_size`` prompts: the oldest waiting job's, then those of the
        jobs of its key. A larger job goes over several turns, so decode steps go on between."""
        if not self._jobs:
            return
        key, call = self._jobs[0].key, self._jobs[0].call
        places: list[tuple[_Job, int]] = []
        for job in list(self._jobs):
            if job.key != key:
                continue
            while job.taken < len(job.prompts) and len(places) < self.max_batch:
                places.append((job, job.taken))
                job.taken += 1
            if job.taken == len(job.prompts):
                self._jobs.remove(job)
            if len(places) == self.max_batch:
                break
        self.stats.on_batch(len(places))
        outcomes = self._outcomes(call, [job.prompts[i] for job, i in places], _sink(places))
        for (job, index), outcome in zip(places, outcomes):
            job.deliver(index, outcome)

    def _outcomes(self, call: Any, prompts: list[Prompt], on_text: TextSink | None) -> list[Any]:
        try:
            answers = list(call(self.model, prompts, on_text))
            if len(answers) != len(prompts):
                raise IftError(
                    f"model '{self.model.name}' returned {len(answers)} answers for {len(prompts)} prompts"
                )
            return answers
        except Exception as exc:  # noqa: BLE001 - a model may raise anything; it is reported
            if len(prompts) == 1:
                return [Failure.of(exc)]
            # Alone, without streaming: text the failed call streamed must not be sent twice.
            return [self._outcomes(call, [p], None)[0] for p in prompts]


def _sink(places: list[tuple[_Job, int]]) -> TextSink | None:
    """A sink over merged jobs, reporting to each job under its own prompt index."""
    if not any(job.on_text for job, _ in places):
        return None

    def sink(index: int, text: str) -> None:
        job, place = places[index]
        if job.on_text is not None:
            job.on_text(place, text)

    return sink


def _generate_call(settings: GenerationSettings) -> BatchCall:
    """Generation as one batched call, for backends that do not batch continuously."""

    def call(model: Any, prompts: list[Prompt], on_text: TextSink | None) -> list[Completion]:
        if on_text is not None and model.can("stream"):
            texts = model.generate_stream(prompts, settings, on_text)
        else:
            texts = model.generate(prompts, settings)
        return [Completion(text) for text in texts]

    return call


class AdapterWorker:
    """One LoRA adapter's view of its base model's worker (``adapters.py``): generation rows
    carry the adapter, so they share decode steps with the base's other rows; batched calls
    are keyed by the adapter and given ``model``, the adapter's view of the base."""

    def __init__(self, worker: ModelWorker, model: Model, adapter: str) -> None:
        self.worker, self.model, self.adapter = worker, model, adapter

    def generate(
        self,
        prompts: Sequence[Prompt],
        settings: GenerationSettings,
        on_text: TextSink | None = None,
        constraint: Constraint | None = None,
    ) -> Future[list[Completion | Failure]]:
        return self.worker.generate(prompts, settings, on_text, constraint, self.adapter)

    def submit(
        self, key: Hashable, call: BatchCall, prompts: Sequence[Prompt], on_text: TextSink | None = None
    ) -> Future[list[Any]]:
        view = self.model
        keyed = ("adapter", self.adapter, key)
        return self.worker.submit(keyed, lambda _, p, t: call(view, p, t), prompts, on_text)

    def classify(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> Future[list[Any]]:
        """``ModelWorker.classify`` under the adapter."""
        return self.submit(*_classify_job(labels), prompts)

    def run(self, function: Callable[[], R]) -> Future[R]:
        return self.worker.run(function)

    @property
    def max_batch(self) -> int:
        return self.worker.max_batch


def _classify_job(labels: Sequence[str]) -> tuple[Hashable, BatchCall]:
    """The key and call of a classification: every job of the key makes this call."""
    labels = list(labels)
    return ("classify", *labels), lambda model, prompts, _: model.classify(prompts, labels)


#: What callers submit to: a model's worker, or an adapter's view of its base's.
Worker = ModelWorker | AdapterWorker


class WorkerModel(Model):
    """A model seen through its worker: each call is submitted and waited for. Ensembles hold
    their members this way, so a member that other nodes also use still has one owner."""

    backend = "worker"
    capabilities = frozenset()  # each view passes on its model's (set in __init__)
    locates_weights = False

    def __init__(self, worker: Worker) -> None:
        super().__init__(worker.model.name)
        self.worker, self.inner = worker, worker.model
        self.backend = worker.model.backend  # type: ignore[misc]  # error messages name the real one
        # What the calls below pass on (streaming goes through the worker itself).
        self.capabilities = worker.model.capabilities & {"generate", "score", "classify"}

    @staticmethod
    def of(worker: Worker) -> WorkerModel:
        """The right view: one that decodes step by step where the model does."""
        return SteppingWorkerModel(worker) if worker.model.can("steps") else WorkerModel(worker)

    @classmethod
    def load(cls, name: str, source: str, options: Any) -> Model:  # pragma: no cover - built by the pool
        raise IftError("a worker's model is loaded by the pool")

    def check_labels(self, labels: Sequence[str]) -> None:
        self.inner.check_labels(labels)

    @staticmethod
    def _answers(outcomes: list[Any]) -> list[Any]:
        failed = next((o for o in outcomes if isinstance(o, Failure)), None)
        if failed is not None:
            raise ModelError(failed.message)
        return outcomes

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        return [c.text for c in self._answers(self.worker.generate(prompts, settings).result())]

    def classify(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> list[list[float]]:
        return self._answers(self.worker.classify(prompts, labels).result())

    def score(
        self, prompts: Sequence[Prompt], choices: Sequence[str], mean: bool = False
    ) -> list[list[float]]:
        choices = list(choices)
        future = self.worker.submit(
            ("score", mean, *choices), lambda m, p, _: m.score(p, choices, mean), prompts
        )
        return self._answers(future.result())


class SteppingWorkerModel(WorkerModel):
    """A ``WorkerModel`` of a model that decodes step by step (``DecodesSteps``); each step
    runs on the model's worker."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(worker)
        inner: Any = worker.model
        # A copy: the ensemble tokenizes on its own thread, and a fast tokenizer must not be
        # used by two threads at once.
        self.tokenizer, self.stop_ids = copy.deepcopy(inner.tokenizer), inner.stop_ids
        self.capabilities = self.capabilities | {"steps"}

    def start_decoding(self, prompts: Sequence[Prompt]) -> DecodingSteps:
        inner: Any = self.inner
        return _WorkerSteps(self.worker, self.worker.run(lambda: inner.start_decoding(prompts)).result())


class _WorkerSteps:
    def __init__(self, worker: Worker, steps: DecodingSteps) -> None:
        self.worker, self.steps = worker, steps

    def logits(self) -> Any:
        return self.worker.run(self.steps.logits).result()

    def advance(self, chosen: Sequence[int]) -> None:
        self.worker.run(lambda: self.steps.advance(chosen)).result()
