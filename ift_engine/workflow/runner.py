"""Runs a ``WorkflowGraph`` over inputs: what a run returns, and the ``Runner`` API.

Each input (item) goes through the graph on its own: a node is submitted for an item the moment
the item's inputs to it exist (``flow.py``), to the worker of the node's model, where it meets
the prompts of other items, nodes and requests. Items that become ready together (a batch's
first nodes, the items one batched answer finished) go as one submission. Failures stay with
their item, and later nodes skip only the items that failed. A single run is a batch of one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import InputError, ModelError, NodeError, WorkflowError
from ..models.base import GenerationSettings
from ..models.resolve import ModelPool
from ..templates import AnswerForm
from .bound import BoundNode
from .cache import AnswerCache, model_identity
from .flow import GraphRun
from .graph import WorkflowGraph
from .loops import LocalLoop, Loop
from .results import ItemError, NodeResult, RunEvents, RunOptions, RunResult, TextEvents

__all__ = ["ItemError", "NodeResult", "RunEvents", "RunOptions", "RunResult", "Runner", "TextEvents"]


class Runner:
    """Runs a graph for one input (``run``) or a batch of inputs (``run_batch``)."""

    def __init__(self, graph: WorkflowGraph, pool: ModelPool, cache: AnswerCache | None = None) -> None:
        self.graph = graph
        self.pool = pool
        self.cache = cache
        self._identities: dict[str, str] = {}

    def check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Declared inputs with defaults applied; missing or unknown inputs are errors."""
        declared = self.graph.spec.inputs
        unknown = sorted(set(inputs) - set(declared))
        if unknown:
            raise InputError(
                self.graph.source,
                unknown[0],
                f"unknown input '{unknown[0]}' (declared: {', '.join(declared) or 'none'})",
            )
        values = {}
        for name, spec in declared.items():
            if name in inputs:
                values[name] = inputs[name]
                if not spec.accepts(values[name]):
                    raise InputError(
                        self.graph.source,
                        name,
                        f"input '{name}' must be of type {spec.type}, not {type(values[name]).__name__}",
                    )
            elif spec.required:
                raise InputError(
                    self.graph.source,
                    name,
                    f"missing required input '{name}'; pass it as --input {name}=... or {name}=... in Python",
                )
            else:
                values[name] = spec.default
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
        on_node_start: Callable[[RunResult, str], None] | None = None,
        on_node_done: Callable[[RunResult, NodeResult], None] | None = None,
        on_text: TextEvents | None = None,
    ) -> list[RunResult]:
        """Run ``(id, checked inputs)`` pairs; never raises for an item's failure.
        ``on_node_start(item, node_id)`` is called as a node is submitted for an item,
        ``on_node_done(item, node_result)`` as it finished for it, and, where the model
        streams, ``on_text(item, node_id, element, new text)`` as an answer grows (``element``:
        the list position, for a map node; else None)."""
        loop = LocalLoop()
        run = self.start(items, loop, RunEvents(on_node_start, on_node_done, on_text))
        loop.run_until(run.finished)
        return run.results

    def start(
        self,
        items: Sequence[tuple[Any, dict[str, Any]]],
        loop: Loop,
        events: RunEvents | None = None,
        on_result: Callable[[RunResult], None] | None = None,
        options: RunOptions | None = None,
    ) -> GraphRun:
        """Start a run of ``items`` on ``loop`` and return at once; ``on_result(item)`` is
        called on the loop as each item finishes."""
        results = [RunResult(self.graph.spec.name, values, id=item_id) for item_id, values in items]
        run = GraphRun(self.graph, self.pool, self.cache_parts, results, loop, options or RunOptions())
        run.start(events or RunEvents(), on_result)
        return run

    def cache_parts(
        self, bound: BoundNode, settings: GenerationSettings
    ) -> tuple[AnswerCache, dict[str, Any]] | None:
        """The cache and what besides the prompt keys this node's answers under ``settings``,
        or None: not cached."""
        if self.cache is None or not bound.spec.cache:
            return None
        scored = bound.template.answer is AnswerForm.LABEL and self.pool.get(bound.model).can("classify")
        if settings.temperature > 0 and settings.seed is None and not scored:
            return None  # a sampled answer is one draw among many: caching would freeze it
        spec_key = bound.model.key()
        if spec_key not in self._identities:
            self._identities[spec_key] = model_identity(self.pool, bound.model)
        parts = {
            "model": self._identities[spec_key],
            "answer": bound.template.answer.value,
            "labels": bound.template.labels,
            "generation": settings.model_dump(mode="json"),
            "plugins": {n: s.model_dump(mode="json") for n, s in sorted(self.graph.plugin_settings.items())},
        }
        if bound.constraint is not None and bound.template.answer is not AnswerForm.LABEL:
            parts["constraint"] = bound.constraint.key()  # a schema, regex or line count
        return self.cache, parts
