"""Items flowing through a workflow graph, driven by readiness.

For each item, each node waits for the nodes it reads. The moment an item's last input to a
node exists, the node's prompts for that item (one, or one per element for a ``map`` node) are
rendered and submitted to the model's worker (``calls.NodeCall``). Items that become ready for a
node while one loop job runs (a batch's first nodes, the items one batched answer finished) go
as one submission. An item finishes when every node has run for it, or at its first failure.
Everything here runs on the run's loop (``loops.py``), one job at a time.

A node whose ``when`` is false for an item, or that has nothing to read for an input (a node it
reads was skipped), is skipped for that item: no prompt, output null. Items of one batch so take
different branches, each branch's prompts still going together. A repeated node's loop (the node,
and the nodes its ``until`` reads after it) runs again for an item, while the condition does not
hold and runs are left, before the nodes after the loop see its results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import IftError, WorkflowError
from ..models.base import GenerationSettings, TextSink
from ..models.resolve import ModelPool
from ..models.worker import Failure
from ..settings import using_settings
from .bound import BoundNode
from .cache import AnswerCache
from .calls import Answer, NodeCall, Outcome
from .decisions import ValueOf, describe, holds
from .graph import WorkflowGraph
from .loops import Loop
from .results import ItemError, NodeResult, RunEvents, RunOptions, RunResult
from .spec import InputSource, is_of_type, ref_text

CacheParts = Callable[[BoundNode, GenerationSettings], "tuple[AnswerCache, dict[str, Any]] | None"]


@dataclass
class _Prompt:
    """One prompt of one item (one element, for a map node)."""

    item: int
    element: int | None
    messages: list[dict[str, str]]
    paraphrase: int


@dataclass
class _Round:
    """Where one item is in a repeated node's loop: the run number, the loop's nodes still to
    finish in this run, and every run's result of each of them."""

    iteration: int
    left: int
    history: dict[str, list[NodeResult]] = field(default_factory=dict)


#: What a reference reads when there is nothing to read (a skipped node, a first run's $self.output).
_NOTHING = object()


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
        self._rounds: list[dict[str, _Round]] = [{} for _ in results]
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
        """Submit each ready node once, for all its ready items. The items it skips are decided
        first; that can make later nodes ready, which are decided in the same turn."""
        runs: dict[str, list[int]] = {}
        with using_settings(self.graph.settings_in_run):
            while self._ready:
                ready, self._ready = self._ready, {}
                for node_id, items in ready.items():
                    for item in items:
                        if self.results[item].error is None and not self._skipped(node_id, item):
                            runs.setdefault(node_id, []).append(item)
            for node_id, items in runs.items():
                self._submit(node_id, [i for i in items if self.results[i].error is None])

    def _skipped(self, node_id: str, item: int) -> bool:
        """Skip the node for the item if its condition is false or an input has nothing to read."""
        bound = self.graph.node(node_id)
        when = bound.spec.when
        if when is not None and not holds(when, self._reader(item)):
            reason: str | None = f"its condition is false: {describe(when)}"
        else:
            reason = self._values(bound, item)[1]
        if reason is None:
            return False
        started = time.perf_counter() - self._began
        node = NodeResult(node_id, None, None, [], 0, bound.model.name, started, 0.0, skipped=reason)
        self.results[item].nodes[node_id] = node
        self._node_finished(item, node_id)
        return True

    def _reader(self, item: int) -> ValueOf:
        """How a condition reads an item's values: a skipped node's output is null."""
        result = self.results[item]

        def value_of(kind: str, name: str) -> Any:
            if kind == "input":
                return result.inputs[name]
            node = result.nodes.get(name)
            return None if node is None else node.output

        return value_of

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

    def _values(self, bound: BoundNode, item: int) -> tuple[dict[str, Any], str | None]:
        """The node's input values for the item, or why one has nothing to read."""
        values: dict[str, Any] = {}
        for variable, source in bound.sources.items():
            value = self._first(source, bound.spec.id, item)
            if value is _NOTHING:
                written = ", ".join(ref_text(ref) for ref in source.refs)
                return values, f"nothing to read for input '{variable}' ({written}: skipped)"
            values[variable] = value
        return values, None

    def _first(self, source: InputSource, node_id: str, item: int) -> Any:
        """The first reference of ``source`` that has a value, else its default, else ``_NOTHING``."""
        result = self.results[item]
        for kind, name in source.refs:
            if kind == "input":
                return result.inputs[name]
            if kind == "node":
                node = result.nodes[name]
                if node.skipped is None:
                    return node.output
                continue
            head = self.graph.repeat_of[node_id]
            iteration = self._rounds[item][head].iteration if head in self._rounds[item] else 1
            if name == "iteration":
                return iteration
            previous = result.nodes.get(node_id)
            if iteration > 1 and previous is not None and previous.skipped is None:
                return previous.output
        return source.default if source.has_default else _NOTHING

    def _prompts(self, bound: BoundNode, item: int) -> list[_Prompt]:
        """The prompts one item needs from this node: one, or one per element for a map node."""
        values = self._values(bound, item)[0]
        for variable, value in values.items():
            # Values whose type the file does not say (JSON without a schema) are checked here.
            wanted = bound.input_type(variable)
            if wanted is not None and not is_of_type(value, wanted):
                raise WorkflowError(
                    f"input '{variable}' must be of type {wanted}, not {type(value).__name__}"
                )
        name = bound.spec.map
        if name is None:
            prompt = bound.template.render(values, bound.spec.paraphrase, bound.spec.paraphrase_seed)
            return [_Prompt(item, None, list(prompt.messages), prompt.paraphrase)]
        elements = values[name]
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
        with using_settings(self.graph.settings_in_run):
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
        head = self.graph.repeat_of.get(node_id)
        loop = None
        if head is not None:
            loop = self._rounds[item].setdefault(head, _Round(1, len(self.graph.repeats[head])))
            result.nodes[node_id].iteration = loop.iteration
            loop.history.setdefault(node_id, []).append(result.nodes[node_id])
        if self.events.node_done:
            self.events.node_done(result, result.nodes[node_id])
        if head is None or loop is None:  # (one is None when the other is)
            self._release(item, node_id)
            return
        for successor in self.graph.graph.successors(node_id):
            if successor in self.graph.repeats[head]:
                self._one_less(item, successor)
        loop.left -= 1
        if loop.left == 0:
            self._round_done(item, head, loop)

    def _one_less(self, item: int, node_id: str) -> None:
        self._waiting[item][node_id] -= 1
        if self._waiting[item][node_id] == 0:
            self._ready.setdefault(node_id, []).append(item)

    def _release(self, item: int, node_id: str) -> None:
        """The node is done for the item: the nodes after it (outside its loop) wait one less."""
        self._left[item] -= 1
        head = self.graph.repeat_of.get(node_id)
        for successor in self.graph.graph.successors(node_id):
            if head is None or successor not in self.graph.repeats[head]:
                self._one_less(item, successor)
        if self._left[item] == 0:
            self._finish(item)

    def _round_done(self, item: int, head: str, loop: _Round) -> None:
        """Every node of the loop ran (or was skipped) once more: run it again, or let it go."""
        repeat = self.graph.node(head).spec.repeat
        assert repeat is not None
        members = self.graph.repeats[head]
        ran = self.results[item].nodes[head].skipped is None
        done = repeat.until is not None and holds(repeat.until, self._reader(item))
        if ran and not done and loop.iteration < repeat.max:
            loop.iteration += 1
            loop.left = len(members)
            for member in members:  # the nodes before the loop are done: only its own wait again
                self._waiting[item][member] = sum(p in members for p in self.graph.graph.predecessors(member))
            self._ready.setdefault(head, []).append(item)
            return
        for member in members:
            self._release(item, member)

    def _keep_iterations(self, item: int) -> None:
        """Every run of the item's repeated nodes, in their results (``iterations``), when
        the item finishes (a failed item's trace keeps the runs it made)."""
        nodes = self.results[item].nodes
        for loop in self._rounds[item].values():
            for node_id, runs in loop.history.items():
                nodes[node_id] = replace(nodes[node_id], iterations=list(runs))

    def _fail(self, item: int, node_id: str, message: str) -> None:
        if self._left[item]:
            self.results[item].error = ItemError(node_id, message)
            self._finish(item)

    def _finish(self, item: int) -> None:
        result = self.results[item]
        self._left[item] = 0
        self._open -= 1
        result.seconds = time.perf_counter() - self._began
        self._keep_iterations(item)
        if result.error is None:
            result.outputs = {name: result.nodes[n].output for name, n in self.graph.outputs().items()}
        if self.on_result:
            self.on_result(result)
