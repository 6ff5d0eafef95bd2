"""The service behind the HTTP API: served workflows and chat models.

Each request runs on its own, on the event loop (``workflow.loops.AsyncioLoop``): its nodes go
to the models' workers the moment their inputs exist, and meet there the prompts of every other
request, so concurrent requests share decode steps and batched calls (``models/worker.py``).
A chat completion goes straight to its model's worker. A request whose client goes away gives
up its prompts, which leave their batch at the next decode step.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import IftError, InputError, ModelError, WorkflowError
from ..models.base import GenerationSettings, Message
from ..models.resolve import ModelPool, ModelSpec
from ..models.worker import Completion, Failure, WorkerStats
from ..structured import Constraint
from ..workflow import RunResult, Workflow
from ..workflow.loops import AsyncioLoop
from ..workflow.runner import NodeResult, RunEvents, Runner, RunOptions

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
        workflow = Workflow.from_yaml(path, pool=pool)
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
        "probabilities": node.probabilities,
        "members": node.members,
        "skipped": node.skipped,
        "iteration": node.iteration,
    }


def draw_svg(workflow: Workflow) -> bytes:
    import io

    from ..workflow.picture import draw_graph

    buffer = io.BytesIO()
    draw_graph(workflow.graph, buffer, format="svg")
    return buffer.getvalue()


class Service:
    """Served workflows and chat models (see the module docstring); ``stats(model name)``
    makes the counters each model's worker reports to. ``close()`` closes the workflows' pools
    unless they are borrowed (``owns_pools=False``: an engine's, which its owner closes)."""

    def __init__(
        self,
        workflows: Mapping[str, Workflow],
        *,
        cache: bool = True,
        stats: Callable[[str], WorkerStats] | None = None,
        owns_pools: bool = True,
    ) -> None:
        self.workflows = dict(workflows)
        self.owns_pools = owns_pools
        self.pools = list({id(wf.pool): wf.pool for wf in self.workflows.values()}.values())
        for pool in self.pools:
            pool.stats = stats
        self.runners: dict[str, Runner] = {name: wf.runner(cache) for name, wf in self.workflows.items()}
        self.load_state: dict[str, str] = {name: "loading" for name in self.workflows}
        self.chat_models = self._chat_models()
        self._pictures: dict[str, bytes] = {}
        self._drawing = threading.Lock()
        #: The loading of every model (set by the app at start): requests wait for it off the
        #: event loop rather than load a model on it.
        self.loading: asyncio.Future[None] | None = None

    async def ready(self, name: str) -> None:
        """Wait until the models are loaded; a workflow whose models failed is a ``ModelError``."""
        if self.loading is not None:
            await asyncio.shield(self.loading)
        state = self.load_state.get(name, "ready")
        if state.startswith("failed"):
            raise ModelError(f"workflow '{name}' is not available: {state.removeprefix('failed: ')}")

    # -- models --------------------------------------------------------------------------------

    def load_models(self) -> None:
        """Load every workflow's models and start their workers; ``load_state`` says how it went."""
        for name, runner in self.runners.items():
            try:
                runner.load_models()
                for node_id in runner.graph.order():
                    runner.pool.worker(runner.graph.node(node_id).model)
                self.load_state[name] = "ready"
            except IftError as exc:
                self.load_state[name] = f"failed: {exc}"

    def _chat_models(self) -> dict[str, ModelSpec]:
        """Models a client may chat with directly, by name: those of the served workflows (with
        their backend and options), and the registered aliases. Never an arbitrary path: a
        request must not make the server load any folder on disk."""
        models: dict[str, ModelSpec] = {}
        self._chat_pools: dict[str, ModelPool] = {}  # each model runs in its workflow's pool
        for workflow in self.workflows.values():
            for node_id in workflow.graph.order():
                model = workflow.graph.node(node_id).model
                if isinstance(model, ModelSpec) and model.name not in models:
                    models[model.name] = model
                    self._chat_pools[model.name] = workflow.pool
        if self.pools:
            for name in self.pools[0].components.model_aliases.names():
                if name not in models:
                    models[name] = ModelSpec(name=name)
                    self._chat_pools[name] = self.pools[0]
        return models

    # -- workflows -----------------------------------------------------------------------------

    def check_inputs(self, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The workflow's checked inputs; ``WorkflowError`` (without the file name) when wrong."""
        try:
            return self.runners[name].check_inputs(inputs)
        except InputError as exc:
            raise WorkflowError(exc.message) from None

    async def run_workflow(
        self,
        name: str,
        inputs: Mapping[str, Any],
        events: EventSink | None = None,
        options: RunOptions | None = None,
    ) -> RunResult:
        """One run of workflow ``name``; ``events(event)`` hears its nodes start and finish and
        its tokens (from the model threads too)."""
        values = self.check_inputs(name, inputs)
        await self.ready(name)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[RunResult] = loop.create_future()

        def finished(result: RunResult) -> None:
            if not done.done():
                done.set_result(result)

        runner = self.runners[name]
        run = runner.start([(None, values)], AsyncioLoop(loop), run_events(events), finished, options)
        try:
            return await done
        finally:
            run.cancel()  # a client that went away gives up its prompts

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

    def check_constraint(self, model: str) -> None:
        """``ModelError`` unless chat model ``model`` can decode under a constraint."""
        backend = self._chat_pools[model].backend_for(self.chat_models[model])
        if not backend.structured_outputs:
            raise ModelError(
                f"response_format is not supported by backend '{backend.backend}' of model '{model}'; "
                "use an hf-causal or onnx model"
            )

    async def chat_model(
        self,
        model: str,
        messages: Sequence[Message],
        settings: GenerationSettings,
        on_text: Callable[[str], None] | None = None,
        constraint: Constraint | None = None,
    ) -> Completion:
        """A model's reply, decoded under ``constraint`` if given; ``on_text(new text)``
        (called on the model's thread) streams it."""
        spec = self.chat_models.get(model)
        if spec is None:
            raise ModelError(f"unknown model '{model}' (known: {', '.join(self.chat_models)})")
        worker = await asyncio.to_thread(self._chat_pools[model].worker, spec)  # loads it the first time
        sink = None if on_text is None else (lambda index, text: on_text(text))
        [reply] = await asyncio.wrap_future(worker.generate([list(messages)], settings, sink, constraint))
        if isinstance(reply, Failure):
            raise ModelError(reply.message)
        return reply

    def picture(self, name: str) -> bytes:
        """The workflow's DAG as SVG, drawn once (matplotlib is drawn from one thread at a time)."""
        with self._drawing:
            if name not in self._pictures:
                self._pictures[name] = draw_svg(self.workflows[name])
            return self._pictures[name]

    def close(self) -> None:
        """Stop the models' workers after the work they have (the pools' owner does, for
        borrowed ones)."""
        if self.owns_pools:
            for pool in self.pools:
                pool.close()


def run_events(sink: EventSink | None) -> RunEvents:
    """A run's events as the service's event dicts."""
    if sink is None:
        return RunEvents()
    events = sink

    def text(result: RunResult, node: str, element: int | None, delta: str) -> None:
        events({"event": "token", "node": node, "element": element, "text": delta})

    return RunEvents(
        node_start=lambda result, node_id: events(node_event("node_started", node_id)),
        node_done=lambda result, node: events(node_event("node_finished", node)),
        text=text,
    )
