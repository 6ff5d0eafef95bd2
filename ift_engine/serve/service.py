"""The service behind the HTTP API: served workflows, their batchers, and the model thread.

Every model call of the service runs on one thread for the life of the process (a PyTorch model
driven from a single thread keeps one OpenMP team), through a ``Batcher`` per workflow (and
per chat model and settings), so concurrent requests share batched model calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import IftError, ModelError, WorkflowError
from ..models.base import GenerationSettings, Message, StreamsText
from ..models.resolve import ModelPool, ModelSpec
from ..workflow import RunResult, Workflow
from ..workflow.runner import NodeResult, Runner
from .batching import Batcher, BatchStats

Event = dict[str, Any]
EventSink = Callable[[Event], None]


def find_workflows(paths: Iterable[str | Path]) -> list[Path]:
    """Workflow files: the files named, and the ``*.yaml``/``*.yml`` files in the folders named."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise WorkflowError(f"{path}: no such workflow file or folder")
    if not found:
        raise WorkflowError(f"no workflow files in {', '.join(map(str, paths))}")
    return found


def load_workflows(paths: Iterable[str | Path], pool: ModelPool | None = None) -> dict[str, Workflow]:
    """The workflows by name (their ``name:`` field); two with one name are an error."""
    workflows: dict[str, Workflow] = {}
    for path in find_workflows(paths):
        workflow = Workflow.from_yaml(path, pool=pool) if pool else Workflow.from_yaml(path)
        name = workflow.spec.name
        if name in workflows:
            raise WorkflowError(f"{path}: workflow name '{name}' is also used by {workflows[name].source}")
        workflows[name] = workflow
    return workflows


INPUT_SCHEMA_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "integer",
    "boolean": "boolean",
    "list": "array",
    "object": "object",
}


def input_schema(workflow: Workflow) -> dict[str, Any]:
    """The workflow's inputs as a JSON Schema object."""
    properties: dict[str, Any] = {}
    for name, spec in workflow.spec.inputs.items():
        prop: dict[str, Any] = {"type": INPUT_SCHEMA_TYPES[spec.type]}
        if spec.description:
            prop["description"] = spec.description
        if not spec.required:
            prop["default"] = spec.default
        properties[name] = prop
    required = [n for n, s in workflow.spec.inputs.items() if s.required]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def node_event(kind: str, node: NodeResult | str) -> Event:
    if isinstance(node, str):
        return {"event": kind, "node": node}
    return {
        "event": kind,
        "node": node.node,
        "output": node.output,
        "seconds": node.seconds,
        "cached": node.cached,
    }


def draw_svg(workflow: Workflow) -> bytes:
    import io

    from ..workflow.picture import draw_graph

    buffer = io.BytesIO()
    draw_graph(workflow.graph, buffer, format="svg")
    return buffer.getvalue()


@dataclass
class ChatRequest:
    messages: list[Message]
    settings: GenerationSettings
    on_text: Callable[[str], None] | None = None


@dataclass
class WorkflowRequest:
    inputs: dict[str, Any]
    events: EventSink | None = None


class Service:
    """Served workflows and chat models, batched across requests (see the module docstring)."""

    def __init__(
        self,
        workflows: Mapping[str, Workflow],
        *,
        max_batch: int = 16,
        max_wait: float = 0.01,
        cache: bool = True,
        stats: Callable[[str], BatchStats] = lambda name: BatchStats(),
    ) -> None:
        self.workflows = dict(workflows)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ift-model")
        self.runners: dict[str, Runner] = {name: wf.runner(cache) for name, wf in self.workflows.items()}
        self.max_batch, self.max_wait, self._stats = max_batch, max_wait, stats
        self.batchers: dict[str, Batcher[Any, Any]] = {
            name: self._batcher(name, self._workflow_batch(runner)) for name, runner in self.runners.items()
        }
        self.load_state: dict[str, str] = {name: "loading" for name in self.workflows}
        self.chat_models = self._chat_models()
        self._pictures: dict[str, bytes] = {}
        self._drawing = threading.Lock()

    def _batcher(self, name: str, run: Callable[[list[Any]], list[Any]]) -> Batcher[Any, Any]:
        return Batcher(run, self.executor, self.max_batch, self.max_wait, self._stats(name))

    # -- models --------------------------------------------------------------------------------

    def load_models(self) -> None:
        """Load every workflow's models (on the model thread); ``load_state`` says how it went."""
        for name, runner in self.runners.items():
            try:
                runner.load_models()
                self.load_state[name] = "ready"
            except IftError as exc:
                self.load_state[name] = f"failed: {exc}"

    def _chat_models(self) -> dict[str, ModelSpec]:
        """Models a client may chat with directly, by name: those of the served workflows (with
        their backend and options), and the registered aliases. Never an arbitrary path: a
        request must not make the server load any folder on disk."""
        models: dict[str, ModelSpec] = {}
        if self.workflows:
            pool = next(iter(self.workflows.values())).pool
            models = {name: ModelSpec(name=name) for name in pool.components.model_aliases.names()}
        for workflow in self.workflows.values():
            for node_id in workflow.graph.order():
                model = workflow.graph.node(node_id).model
                if isinstance(model, ModelSpec):
                    models.setdefault(model.name, model)
        return models

    # -- workflows -----------------------------------------------------------------------------

    @staticmethod
    def _workflow_batch(runner: Runner) -> Callable[[list[WorkflowRequest]], list[RunResult]]:
        def run(requests: list[WorkflowRequest]) -> list[RunResult]:
            def started(node_id: str) -> None:
                for request in requests:
                    if request.events:
                        request.events(node_event("node_started", node_id))

            def finished(result: RunResult, node: NodeResult) -> None:
                request = requests[result.id]
                if request.events:
                    request.events(node_event("node_finished", node))

            def text(result: RunResult, node: str, element: int | None, delta: str) -> None:
                request = requests[result.id]
                if request.events:
                    request.events({"event": "token", "node": node, "element": element, "text": delta})

            items = [(index, request.inputs) for index, request in enumerate(requests)]
            streaming = any(request.events for request in requests)
            return runner.run_batch(
                items, on_node_start=started, on_node_done=finished, on_text=text if streaming else None
            )

        return run

    def check_inputs(self, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The workflow's checked inputs; ``WorkflowError`` (without the file name) when wrong."""
        runner = self.runners[name]
        try:
            return runner.check_inputs(inputs)
        except WorkflowError as exc:
            raise WorkflowError(str(exc).removeprefix(f"{runner.graph.source}: ")) from None

    async def run_workflow(
        self, name: str, inputs: Mapping[str, Any], events: EventSink | None = None
    ) -> RunResult:
        values = self.check_inputs(name, inputs)
        result: RunResult = await self.batchers[name].submit(WorkflowRequest(values, events))
        return result

    # -- chat ----------------------------------------------------------------------------------

    def chat_workflow_input(self, name: str) -> tuple[str, str]:
        """(input, output) of a workflow that can answer a chat: one string input, one output."""
        workflow = self.workflows[name]
        inputs = [n for n, s in workflow.spec.inputs.items() if s.type == "string"]
        outputs = list(workflow.graph.outputs())
        if len(workflow.spec.inputs) != 1 or len(inputs) != 1 or len(outputs) != 1:
            raise WorkflowError(
                f"workflow '{name}' cannot answer a chat: it needs exactly one text input and one output "
                f"(it has inputs {list(workflow.spec.inputs)} and outputs {outputs})"
            )
        return inputs[0], outputs[0]

    async def chat_model(
        self,
        model: str,
        messages: Sequence[Message],
        settings: GenerationSettings,
        on_text: Callable[[str], None] | None = None,
    ) -> str:
        """A model's reply; ``on_text(new text)`` (called on the model thread) streams it where the
        model can. One batcher per model (a client cannot grow them with new settings); requests
        of a batch that share settings share a call."""
        spec = self.chat_models.get(model)
        if spec is None:
            raise ModelError(f"unknown model '{model}' (known: {', '.join(self.chat_models)})")
        key = f"chat:{model}"
        if key not in self.batchers:
            self.batchers[key] = self._batcher(model, self._chat_batch(spec))
        answer: str = await self.batchers[key].submit(ChatRequest(list(messages), settings, on_text))
        return answer

    def _chat_batch(self, spec: ModelSpec) -> Callable[[list[ChatRequest]], list[str]]:
        pool = next(iter(self.workflows.values())).pool

        def run(requests: list[ChatRequest]) -> list[str]:
            chat = pool.get(spec)
            answers: list[str] = [""] * len(requests)
            groups: dict[str, list[int]] = {}
            for index, request in enumerate(requests):
                groups.setdefault(request.settings.model_dump_json(), []).append(index)
            for indices in groups.values():
                prompts = [requests[i].messages for i in indices]
                settings = requests[indices[0]].settings
                sinks = [requests[i].on_text for i in indices]
                if isinstance(chat, StreamsText) and any(sinks):

                    def to_request(index: int, text: str, sinks: list[Any] = sinks) -> None:
                        if sinks[index]:
                            sinks[index](text)

                    replies = chat.generate_stream(prompts, settings, to_request)
                else:
                    replies = chat.generate(prompts, settings)
                for i, reply in zip(indices, replies):
                    answers[i] = reply
            return answers

        return run

    def picture(self, name: str) -> bytes:
        """The workflow's DAG as SVG, drawn once (matplotlib is drawn from one thread at a time)."""
        with self._drawing:
            if name not in self._pictures:
                self._pictures[name] = draw_svg(self.workflows[name])
            return self._pictures[name]

    async def close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
        self.executor.shutdown(wait=True)
