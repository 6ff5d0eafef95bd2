"""Items flowing through a workflow graph, driven by readiness.

For each item, each node waits for the nodes it reads. The moment an item's last input to a
node exists, the node's prompts for that item (one, or one per element for a ``map`` node) are
rendered and submitted to the model's worker (``calls.NodeCall``). Items that become ready for a
node while one loop job runs (a batch's first nodes, the items one batched answer finished) go
as one submission. An item finishes when every node has run for it, or at its first failure.
Everything here runs on the run's loop (``loops.py``), one job at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import IftError, WorkflowError
from ..models.base import GenerationSettings, TextSink
from ..models.resolve import ModelPool
from ..models.worker import Failure
from ..settings import using_settings
from .cache import AnswerCache
from .calls import Answer, NodeCall, Outcome
from .graph import BoundNode, WorkflowGraph
from .loops import Loop
from .results import ItemError, NodeResult, RunEvents, RunOptions, RunResult
from .spec import reference

CacheParts = Callable[[BoundNode, GenerationSettings], "tuple[AnswerCache, dict[str, Any]] | None"]


@dataclass
class _Prompt:
    """One prompt of one item (one element, for a map node)."""

    item: int
    element: int | None
    messages: list[dict[str, str]]
    paraphrase: int


class GraphRun:
    """Items through the graph (see the module docstring). ``finished()`` says when all are."""

    def __init__(
        self,
        graph: WorkflowGraph,
        pool: ModelPool,
        cache_parts: CacheParts,
        results: list[RunResult],
        loop: Loop,
        options: RunOptions,
    ) -> None:
        self.graph, self.pool, self.cache_parts, self.loop = graph, pool, cache_parts, loop
        self.options = options
        self.results = results
        self.events = RunEvents()
        self.on_result: Callable[[RunResult], None] | None = None
        nodes = graph.graph
        self._waiting = [{n: nodes.in_degree(n) for n in nodes} for _ in results]
        self._left = [len(nodes) for _ in results]
        self._open = len(results)
        self._ready: dict[str, list[int]] = {}
        self._calls: list[NodeCall] = []
        self._began = time.perf_counter()

    def finished(self) -> bool:
        return self._open == 0

    def cancel(self) -> None:
        """Give up: the prompts still with the models leave their batches at the next step."""
        for call in self._calls:
            call.cancel()

    def start(self, events: RunEvents, on_result: Callable[[RunResult], None] | None = None) -> None:
        self.events, self.on_result = events, on_result
        for item, waiting in enumerate(self._waiting):
            for node_id, count in waiting.items():
                if count == 0:
                    self._ready.setdefault(node_id, []).append(item)
        if not self.results:
            return
        self._flush()

    def _flush(self) -> None:
        ready, self._ready = self._ready, {}
        with using_settings(self.graph.plugin_settings):
            for node_id, items in ready.items():
                self._submit(node_id, [i for i in items if self.results[i].error is None])

    # -- submitting ----------------------------------------------------------------------------

    def _submit(self, node_id: str, items: list[int]) -> None:
        bound = self.graph.node(node_id)
        prompts: list[_Prompt] = []
        submitted = []
        for item in items:
            try:
                prompts += self._prompts(bound, item)
            except IftError as exc:
                self._fail(item, node_id, str(exc))
                continue
            submitted.append(item)
            if self.events.node_start:
                self.events.node_start(self.results[item], node_id)
        began = time.perf_counter()

        def answered(outcomes: list[Outcome]) -> None:
            self._calls.remove(call)
            self._answered(node_id, submitted, prompts, outcomes, began)

        try:
            settings = bound.generation.model_copy(update=self.options.generation)
            cache = self.cache_parts(bound, settings) if self.options.cache else None
            call = NodeCall(bound, settings, self.pool, self.loop, cache, answered)
            self._calls.append(call)
            call.start([p.messages for p in prompts], self._sink(node_id, prompts))
        except Exception as exc:  # noqa: BLE001 - the model could not be had: its items fail
            for item in submitted:
                self._fail(item, node_id, Failure.of(exc).message)

    def _sink(self, node_id: str, prompts: list[_Prompt]) -> TextSink | None:
        text = self.events.text
        if text is None:
            return None
        results = self.results
        return lambda index, delta: text(results[prompts[index].item], node_id, prompts[index].element, delta)

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

    def _prompts(self, bound: BoundNode, item: int) -> list[_Prompt]:
        """The prompts one item needs from this node: one, or one per element for a map node."""
        values = self._values(bound, self.results[item])
        name = bound.spec.map
        if name is None:
            prompt = bound.template.render(values, bound.spec.paraphrase, bound.spec.paraphrase_seed)
            return [_Prompt(item, None, list(prompt.messages), prompt.paraphrase)]
        elements = values[name]
        if not isinstance(elements, (list, tuple)):
            raise WorkflowError(f"map: input '{name}' must be a list, not {type(elements).__name__}")
        prompts = []
        for k, element in enumerate(elements):
            prompt = bound.template.render(
                {**values, name: element}, bound.spec.paraphrase, bound.spec.paraphrase_seed
            )
            prompts.append(_Prompt(item, k, list(prompt.messages), prompt.paraphrase))
        return prompts

    # -- answers -------------------------------------------------------------------------------

    def _answered(
        self, node_id: str, items: list[int], prompts: list[_Prompt], outcomes: list[Outcome], began: float
    ) -> None:
        bound = self.graph.node(node_id)
        timing = (began - self._began, time.perf_counter() - began)
        elements: dict[int, list[NodeResult]] = {item: [] for item in items}
        with using_settings(self.graph.plugin_settings):
            for prompt, outcome in zip(prompts, outcomes):
                result = self.results[prompt.item]
                if result.error is not None:
                    continue
                if not isinstance(outcome, Answer):
                    result.error = ItemError(node_id, outcome.message)
                    continue
                try:
                    node_result = self._node_result(bound, prompt, outcome, timing)
                except Exception as exc:  # noqa: BLE001 - a parser (a plugin's too) may raise anything
                    result.error = ItemError(node_id, Failure.of(exc).message)
                    continue
                if prompt.element is None:
                    result.nodes[node_id] = node_result
                else:
                    elements[prompt.item].append(node_result)
        for item in items:
            if bound.spec.map is not None and self.results[item].error is None:
                self.results[item].nodes[node_id] = self._map_result(bound, elements[item], timing)
            self._node_finished(item, node_id)
        self._flush()

    def _node_result(
        self, bound: BoundNode, prompt: _Prompt, answer: Answer, timing: tuple[float, float]
    ) -> NodeResult:
        output = answer.label
        if output is None:
            output = bound.parser.parse(answer.raw or "", bound.template)
        return NodeResult(
            bound.spec.id,
            output,
            answer.raw,
            prompt.messages,
            prompt.paraphrase,
            bound.model.name,
            *timing,
            answer.probabilities,
            answer.members,
            answer.cached,
        )

    @staticmethod
    def _map_result(bound: BoundNode, elements: list[NodeResult], timing: tuple[float, float]) -> NodeResult:
        """A map node's result: its elements' results, in order."""
        return NodeResult(
            bound.spec.id,
            [e.output for e in elements],
            None,
            [],
            bound.spec.paraphrase or 0,
            bound.model.name,
            *timing,
            cached=bool(elements) and all(e.cached for e in elements),
            items=elements,
        )

    def _node_finished(self, item: int, node_id: str) -> None:
        result = self.results[item]
        if self._left[item] == 0:
            return  # already finished (failed on another branch)
        if result.error is not None:
            self._finish(item)
            return
        if self.events.node_done:
            self.events.node_done(result, result.nodes[node_id])
        self._left[item] -= 1
        for successor in self.graph.graph.successors(node_id):
            self._waiting[item][successor] -= 1
            if self._waiting[item][successor] == 0:
                self._ready.setdefault(successor, []).append(item)
        if self._left[item] == 0:
            self._finish(item)

    def _fail(self, item: int, node_id: str, message: str) -> None:
        if self._left[item]:
            self.results[item].error = ItemError(node_id, message)
            self._finish(item)

    def _finish(self, item: int) -> None:
        result = self.results[item]
        self._left[item] = 0
        self._open -= 1
        result.seconds = time.perf_counter() - self._began
        if result.error is None:
            result.outputs = {name: result.nodes[n].output for name, n in self.graph.outputs().items()}
        if self.on_result:
            self.on_result(result)
