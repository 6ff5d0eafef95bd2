"""Executes a ``WorkflowGraph``: each node starts as soon as its inputs are ready, and
independent branches run concurrently on a thread pool (model calls release the GIL)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from ..ensemble import LabelEnsembleModel, TextEnsembleModel
from ..errors import IftError, ModelError, NodeError, WorkflowError
from ..models.resolve import ModelPool
from ..settings import using_settings
from ..templates import AnswerForm
from .graph import BoundNode, WorkflowGraph
from .spec import reference


@dataclass
class NodeResult:
    """What one node did: its output, the model's raw answer, the prompt, and timing."""

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


@dataclass
class RunResult:
    """A whole run. ``outputs`` holds the declared workflow outputs; ``nodes`` every node."""

    workflow: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, NodeResult] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)


@dataclass
class Answer:
    output: Any
    raw: str | None = None
    probabilities: dict[str, float] | None = None
    members: dict[str, Any] | None = None


def _argmax(probabilities: Mapping[str, float]) -> str:
    # max() keeps the first of equal values: ties go to the lowest label index.
    return max(probabilities, key=probabilities.__getitem__)


def run_node(bound: BoundNode, messages: list[dict[str, str]], pool: ModelPool) -> Answer:
    """Call the node's model (or ensemble) on one prompt and parse the answer."""
    template = bound.template
    model = pool.get(bound.model)
    if template.answer is AnswerForm.LABEL and model.can("classify"):
        if isinstance(model, LabelEnsembleModel):
            rows, member_rows = model.classify_with_members([messages], template.labels)
            members = {}
            for member, member_row in zip(model.members, member_rows):
                probs = dict(zip(template.labels, member_row[0]))
                members[member.name] = {"output": _argmax(probs), "probabilities": probs}
        else:
            rows, members = model.classify([messages], template.labels), None
        probabilities = dict(zip(template.labels, rows[0]))
        return Answer(_argmax(probabilities), None, probabilities, members)
    if isinstance(model, TextEnsembleModel):
        answers, details = model.generate_with_members([messages], bound.generation)
        raw = answers[0]
        members = {"details": details[0]} if details and details[0] is not None else None
    else:
        raw, members = model.generate([messages], bound.generation)[0], None
    return Answer(bound.parser.parse(raw, template), raw, None, members)


class Runner:
    """Runs a graph for one set of inputs."""

    def __init__(self, graph: WorkflowGraph, pool: ModelPool, max_workers: int = 8) -> None:
        self.graph = graph
        self.pool = pool
        self.max_workers = max_workers

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

    def _values(
        self, bound: BoundNode, inputs: Mapping[str, Any], done: Mapping[str, NodeResult]
    ) -> dict[str, Any]:
        values = {}
        for variable, value in bound.spec.inputs.items():
            ref = reference(value)
            if ref is None:
                values[variable] = value
            elif ref[0] == "input":
                values[variable] = inputs[ref[1]]
            else:
                values[variable] = done[ref[1]].output
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
        values = self.check_inputs(inputs)
        self.load_models()
        result = RunResult(self.graph.spec.name, values)
        graph = self.graph.graph
        waiting = {n: graph.in_degree(n) for n in graph}
        start = time.perf_counter()

        def execute(node_id: str) -> NodeResult:
            bound = self.graph.node(node_id)
            began = time.perf_counter()
            prompt = bound.template.render(
                self._values(bound, values, result.nodes),
                bound.spec.paraphrase,
                bound.spec.paraphrase_seed,
            )
            with using_settings(self.graph.plugin_settings):  # per thread: nodes run on a pool
                answer = run_node(bound, list(prompt.messages), self.pool)
            return NodeResult(
                node_id,
                answer.output,
                answer.raw,
                list(prompt.messages),
                prompt.paraphrase,
                bound.model.name,
                began - start,
                time.perf_counter() - began,
                answer.probabilities,
                answer.members,
            )

        failure: tuple[str, BaseException] | None = None
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="ift-node") as pool:
            running: dict[Future[NodeResult], str] = {
                pool.submit(execute, n): n for n, count in waiting.items() if count == 0
            }
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    node_id = running.pop(future)
                    exc = future.exception()
                    if exc is not None:
                        failure = failure or (node_id, exc)
                        continue
                    node_result = future.result()
                    result.nodes[node_id] = node_result
                    if on_node_done:
                        on_node_done(node_result)
                    if failure:
                        continue  # let running nodes finish, start nothing new
                    for successor in graph.successors(node_id):
                        waiting[successor] -= 1
                        if waiting[successor] == 0:
                            running[pool.submit(execute, successor)] = successor
        result.seconds = time.perf_counter() - start
        if failure:
            node_id, exc = failure
            message = str(exc) if isinstance(exc, IftError) else f"{type(exc).__name__}: {exc}"
            result.error = f"node '{node_id}': {message}"
            raise NodeError(node_id, message, partial=result) from exc
        result.outputs = {name: result.nodes[n].output for name, n in self.graph.outputs().items()}
        return result
