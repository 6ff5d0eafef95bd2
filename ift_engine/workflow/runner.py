"""Executes a ``WorkflowGraph`` over a batch of inputs.

Each node runs once per batch: the pending items' prompts (all elements of a ``map`` node's
list included) go to the model in one call, so a batch of N inputs costs each node one batched
model call instead of N. A node starts as soon as its inputs are ready, and independent
branches run concurrently on a thread pool (model calls release the GIL). Failures stay with
their item: a failed batched call is retried item by item, so one bad item cannot fail the
others, and later nodes skip only the items that failed. A single run is a batch of one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import IftError, ModelError, NodeError, WorkflowError
from ..files import json_text
from ..models.base import TextSink
from ..models.resolve import ModelPool
from ..settings import using_settings
from ..templates import AnswerForm
from .cache import AnswerCache, model_identity
from .calls import Failure, Outcome, node_call
from .graph import BoundNode, WorkflowGraph
from .spec import reference

#: Streamed text of a run: (item, node id, element of a map node or None, new text).
TextEvents = Callable[["RunResult", str, "int | None", str], None]


@dataclass
class NodeResult:
    """What one node did for one input: its output, the model's raw answer, the prompt, and
    timing (of the batched call the item was part of). A ``map`` node's output is the list of
    its elements' outputs, and ``items`` holds each element's own result."""

    node: str
    output: Any
    raw: str | None
    prompt: list[dict[str, str]]
    paraphrase: int
    model: str
    started: float
    seconds: float
    probabilities: dict[str, float] | None = None
    #: For ensembles: each member's answer and score, beside the ensemble's.
    members: dict[str, Any] | None = None
    #: True when the answer came from the on-disk cache.
    cached: bool = False
    items: list[NodeResult] | None = None


@dataclass
class ItemError:
    """Why one input failed: the node (None for bad inputs) and the message."""

    node: str | None
    message: str

    def __str__(self) -> str:
        return f"node '{self.node}': {self.message}" if self.node else self.message


@dataclass
class RunResult:
    """One input's run. ``outputs`` holds the declared workflow outputs; ``nodes`` every node
    that finished; ``error`` says which node failed and why."""

    workflow: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, NodeResult] = field(default_factory=dict)
    seconds: float = 0.0
    error: ItemError | None = None
    id: Any = None

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json_text(self.to_dict(), indent=2)

    def row(self) -> dict[str, Any]:
        """The compact record a batch run writes per input."""
        return {
            "id": self.id,
            "outputs": self.outputs,
            "error": asdict(self.error) if self.error else None,
            "cached": [n for n, r in self.nodes.items() if r.cached],
            "seconds": round(self.seconds, 4),
        }


@dataclass
class _Job:
    """One prompt of one item (one element, for a map node)."""

    result: RunResult
    element: int | None
    messages: list[dict[str, str]]
    paraphrase: int


class Runner:
    """Runs a graph for one input (``run``) or a batch of inputs (``run_batch``)."""

    def __init__(
        self,
        graph: WorkflowGraph,
        pool: ModelPool,
        max_workers: int = 8,
        cache: AnswerCache | None = None,
    ) -> None:
        self.graph = graph
        self.pool = pool
        self.max_workers = max_workers
        self.cache = cache
        self._identities: dict[str, str] = {}

    def check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Declared inputs with defaults applied; missing or unknown inputs are errors."""
        declared = self.graph.spec.inputs
        unknown = sorted(set(inputs) - set(declared))
        if unknown:
            raise WorkflowError(
                f"{self.graph.source}: unknown input '{unknown[0]}' "
                f"(declared: {', '.join(declared) or 'none'})"
            )
        values = {}
        for name, spec in declared.items():
            if name in inputs:
                values[name] = inputs[name]
                if not spec.accepts(values[name]):
                    raise WorkflowError(
                        f"{self.graph.source}: input '{name}' must be of type {spec.type}, "
                        f"not {type(values[name]).__name__}"
                    )
            elif spec.required:
                raise WorkflowError(
                    f"{self.graph.source}: missing required input '{name}'; "
                    f"pass it as --input {name}=... or {name}=... in Python"
                )
            else:
                values[name] = spec.default
        return values

    def _values(self, bound: BoundNode, result: RunResult) -> dict[str, Any]:
        values = {}
        for variable, value in bound.spec.inputs.items():
            ref = reference(value)
            if ref is None:
                values[variable] = value
            elif ref[0] == "input":
                values[variable] = result.inputs[ref[1]]
            else:
                values[variable] = result.nodes[ref[1]].output
        return values

    def load_models(self) -> None:
        """Load every model the graph uses (once per spec) before any node runs: node timings
        exclude loading, and ensemble checks that need the members (label sets, tokenizers)
        fail here, naming the node."""
        for node_id in self.graph.order():
            bound = self.graph.node(node_id)
            try:
                model = self.pool.get(bound.model)
                if bound.template.answer is AnswerForm.LABEL:
                    model.check_labels(bound.template.labels)
            except ModelError as exc:
                raise WorkflowError(f"{self.graph.source}: node '{node_id}', field 'model': {exc}") from None

    def run(
        self,
        inputs: Mapping[str, Any],
        on_node_done: Callable[[NodeResult], None] | None = None,
    ) -> RunResult:
        """Run one input; a failing node raises ``NodeError`` with the partial result."""
        values = self.check_inputs(inputs)
        self.load_models()
        done = (lambda item, node: on_node_done(node)) if on_node_done else None
        [result] = self.run_batch([(None, values)], on_node_done=done)
        if result.error is not None:
            raise NodeError(result.error.node or "?", result.error.message, partial=result)
        return result

    def run_batch(
        self,
        items: Sequence[tuple[Any, dict[str, Any]]],
        *,
        on_node_start: Callable[[str], None] | None = None,
        on_node_done: Callable[[RunResult, NodeResult], None] | None = None,
        on_text: TextEvents | None = None,
    ) -> list[RunResult]:
        """Run ``(id, checked inputs)`` pairs together; never raises for an item's failure.
        ``on_node_start(node_id)`` is called as a node starts for the batch,
        ``on_node_done(item, node_result)`` for each item a node finished, and, where the model
        streams, ``on_text(item, node_id, element, new text)`` as an answer grows (``element``:
        the list position, for a map node; else None)."""
        results = [RunResult(self.graph.spec.name, values, id=item_id) for item_id, values in items]
        graph = self.graph.graph
        waiting = {n: graph.in_degree(n) for n in graph}
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="ift-node") as threads:

            def submit(node_id: str) -> Future[None]:
                if on_node_start:
                    on_node_start(node_id)
                return threads.submit(self._execute, node_id, results, start, on_text)

            running = {submit(n): n for n, count in waiting.items() if count == 0}
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    node_id = running.pop(future)
                    future.result()  # item failures are recorded on the items; this is a bug
                    if on_node_done:
                        for result in results:
                            if node_id in result.nodes:
                                on_node_done(result, result.nodes[node_id])
                    for successor in graph.successors(node_id):
                        waiting[successor] -= 1
                        if waiting[successor] == 0:
                            running[submit(successor)] = successor
        seconds = time.perf_counter() - start
        outputs = self.graph.outputs()
        for result in results:
            result.seconds = seconds
            if result.error is None:
                result.outputs = {name: result.nodes[n].output for name, n in outputs.items()}
        return results

    def _execute(
        self, node_id: str, results: list[RunResult], start: float, on_text: TextEvents | None
    ) -> None:
        with using_settings(self.graph.plugin_settings):  # per thread: nodes run on a pool
            self._execute_node(node_id, results, start, on_text)

    def _jobs(self, bound: BoundNode, result: RunResult) -> list[_Job]:
        """The prompts one item needs from this node: one, or one per element for a map node."""
        values = self._values(bound, result)
        name = bound.spec.map
        if name is None:
            prompt = bound.template.render(values, bound.spec.paraphrase, bound.spec.paraphrase_seed)
            return [_Job(result, None, list(prompt.messages), prompt.paraphrase)]
        elements = values[name]
        if not isinstance(elements, (list, tuple)):
            raise WorkflowError(f"map: input '{name}' must be a list, not {type(elements).__name__}")
        jobs = []
        for k, element in enumerate(elements):
            prompt = bound.template.render(
                {**values, name: element}, bound.spec.paraphrase, bound.spec.paraphrase_seed
            )
            jobs.append(_Job(result, k, list(prompt.messages), prompt.paraphrase))
        return jobs

    def _execute_node(
        self, node_id: str, results: list[RunResult], start: float, on_text: TextEvents | None
    ) -> None:
        bound = self.graph.node(node_id)
        began = time.perf_counter()
        jobs: list[_Job] = []
        for result in results:
            if result.error is None:
                try:
                    jobs += self._jobs(bound, result)
                except IftError as exc:
                    result.error = ItemError(node_id, str(exc))
        sink: TextSink | None = None
        if on_text is not None:
            events = on_text

            def sink(index: int, text: str) -> None:
                events(jobs[index].result, node_id, jobs[index].element, text)

        answers = self._answers(bound, [job.messages for job in jobs], sink)
        seconds = time.perf_counter() - began
        per_item: dict[int, list[NodeResult]] = {}
        for job, answer in zip(jobs, answers):
            result = job.result
            if result.error is not None:
                continue
            if isinstance(answer, Failure):
                result.error = ItemError(node_id, answer.message)
                continue
            try:
                output = (
                    answer.label
                    if answer.label is not None
                    else bound.parser.parse(answer.raw or "", bound.template)
                )
            except IftError as exc:
                result.error = ItemError(node_id, str(exc))
                continue
            node_result = NodeResult(
                node_id,
                output,
                answer.raw,
                job.messages,
                job.paraphrase,
                bound.model.name,
                began - start,
                seconds,
                answer.probabilities,
                answer.members,
                answer.cached,
            )
            if job.element is None:
                result.nodes[node_id] = node_result
            else:
                per_item.setdefault(id(result), []).append(node_result)
        if bound.spec.map is None:
            return
        for result in results:  # a map node's result: its elements' results, in order
            if result.error is None:
                elements = per_item.get(id(result), [])
                result.nodes[node_id] = NodeResult(
                    node_id,
                    [e.output for e in elements],
                    None,
                    [],
                    bound.spec.paraphrase or 0,
                    bound.model.name,
                    began - start,
                    seconds,
                    cached=bool(elements) and all(e.cached for e in elements),
                    items=elements,
                )

    # -- model calls: cache, retries, timeout, failure isolation ---------------------------

    def _cache_parts(self, bound: BoundNode) -> dict[str, Any] | None:
        """What besides the prompt keys this node's cached answers, or None: not cached."""
        settings = bound.generation
        if self.cache is None or not bound.spec.cache:
            return None
        scored = bound.template.answer is AnswerForm.LABEL and self.pool.get(bound.model).can("classify")
        if settings.temperature > 0 and settings.seed is None and not scored:
            return None  # a sampled answer is one draw among many: caching would freeze it
        spec_key = bound.model.key()
        if spec_key not in self._identities:
            self._identities[spec_key] = model_identity(self.pool, bound.model)
        return {
            "model": self._identities[spec_key],
            "answer": bound.template.answer.value,
            "labels": bound.template.labels,
            "generation": settings.model_dump(mode="json"),
            "plugins": {n: s.model_dump(mode="json") for n, s in sorted(self.graph.plugin_settings.items())},
        }

    def _answers(
        self, bound: BoundNode, prompts: list[list[dict[str, str]]], on_text: TextSink | None
    ) -> list[Outcome]:
        """One answer (or why not) per prompt, through the node's call policies."""
        parts = self._cache_parts(bound)
        cache = (self.cache, parts) if self.cache is not None and parts is not None else None
        return node_call(bound, self.pool, cache)(prompts, on_text)
