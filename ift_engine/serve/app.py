"""The HTTP service (FastAPI on uvicorn): workflows and models over REST, server-sent events and
an OpenAI-compatible chat API, batched across requests, with Prometheus metrics and a web page.

Errors are JSON in OpenAI's shape, ``{"error": {"message", "type", "param", "node"}}``: 404 for
an unknown workflow or model, 422 for bad input (naming the field), 413 for a body over the
limit, 401 without the API key, 500 when a node fails (naming the node). Never a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine import Engine
from ..errors import ConstraintError, IftError, ModelError, WorkflowError
from ..files import json_text
from ..models.base import GenerationSettings
from ..models.worker import Completion
from ..structured import Constraint
from ..templates import to_text
from ..workflow import RunResult, Workflow
from ..workflow.results import NodeResult, RunOptions
from . import openai_api
from .metrics import Metrics
from .service import Service, input_schema, load_workflows

STATIC = Path(__file__).parent / "static"
T = TypeVar("T")
Item = TypeVar("Item")
Result = TypeVar("Result")
OPEN_PATHS = ("/healthz", "/", "/static/")  # no data there: no key needed


@dataclass
class ServeConfig:
    paths: list[str] = field(default_factory=lambda: ["workflows"])
    api_key: str | None = None
    max_body_bytes: int = 1024 * 1024
    cache: bool = True


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, kind: str, param: str | None = None, node: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.node = status, message, kind, param, node


class JSON(JSONResponse):
    """JSON that never fails to encode: text UTF-8 cannot hold goes out as JSON escapes."""

    def render(self, content: Any) -> bytes:
        return json_text(content).encode("utf-8")


def error_response(
    status: int, message: str, kind: str, param: str | None = None, node: str | None = None
) -> JSON:
    error = {"message": message, "type": kind, "param": param, "node": node}
    return JSON({"error": error}, status_code=status)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes (413), declared or sent in chunks: the body
    is read here first (it is small), so the app never sees a cut one."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = error_response(413, f"the body is over {self.limit} bytes", "too_large")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return await too_large(scope, receive, send)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(default_factory=dict)
    trace: bool = False
    stream: bool = False
    #: Overrides of every node's generation settings, e.g. {"max_new_tokens": 32}.
    generation: dict[str, Any] = Field(default_factory=dict)
    cache: bool = True

    def options(self) -> RunOptions:
        return RunOptions(checked(self.generation, "generation"), self.cache)


def checked(given: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Generation overrides, checked; a value out of range is a 422 naming the field."""
    try:
        return openai_api.checked_overrides(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join([where, *map(str, first["loc"])]).removeprefix(".")
        raise ApiError(422, f"{field}: {first['msg']}", "invalid_request_error", field) from None


def result_body(result: RunResult, trace: bool) -> dict[str, Any]:
    nodes = {n: node_summary(r) for n, r in result.nodes.items()}
    body: dict[str, Any] = {"outputs": result.outputs, "nodes": nodes, "seconds": result.seconds}
    if trace:
        body["trace"] = result.to_dict()
    return body


def node_summary(node: NodeResult) -> dict[str, Any]:
    """A node's entry in a run's reply: its output, and whether (why) it was skipped or how
    many times it ran in a repeat."""
    summary: dict[str, Any] = {
        "output": node.output,
        "seconds": node.seconds,
        "cached": node.cached,
        "skipped": node.skipped,
    }
    if node.iterations is not None:
        summary["iterations"] = len(node.iterations)
    return summary


def raise_for_item(result: RunResult) -> None:
    if result.error is None:
        return
    if result.error.node is None:
        raise ApiError(422, result.error.message, "invalid_request_error", "inputs")
    raise ApiError(500, str(result.error), "node_error", node=result.error.node)


def create_app(
    config: ServeConfig, workflows: Mapping[str, Workflow] | None = None, engine: Engine | None = None
) -> FastAPI:
    """The app for ``config``: its workflows share one pool, so each model loads once whichever
    of them use it. The pool is ``engine``'s (left open when the app stops: the engine's owner
    closes it), else a new engine's (closed when the app stops). ``workflows`` already loaded
    are served instead of ``config.paths``; the app closes their pools."""
    if workflows is not None and engine is not None:
        raise TypeError("create_app takes workflows or an engine, not both")
    metrics = Metrics()
    if workflows is None:
        workflows = load_workflows(config.paths, (engine or Engine()).pool)
    service = Service(
        workflows,
        cache=config.cache,
        stats=metrics.worker_stats,
        owns_pools=engine is None,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.loading = asyncio.create_task(asyncio.to_thread(service.load_models))
        try:
            yield
        finally:
            try:
                await service.loading  # a load still running finishes before the workers stop
            finally:
                await asyncio.to_thread(service.close)

    app = FastAPI(title="ift_engine", lifespan=lifespan, default_response_class=JSON, docs_url="/docs")
    app.state.service = service
    app.state.metrics = metrics
    install_middleware(app, config, metrics)
    install_error_handlers(app)
    add_workflow_routes(app, service)
    add_openai_routes(app, service)
    add_page_routes(app, metrics)
    return app


def install_middleware(app: FastAPI, config: ServeConfig, metrics: Metrics) -> None:
    served_by = f"{socket.gethostname()}:{os.getpid()}"  # which process (or Ray replica) answered

    @app.middleware("http")
    async def auth_and_metrics(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        path = request.url.path
        open_path = path in OPEN_PATHS or path.startswith("/static/")
        if config.api_key and not open_path:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
                response: Response = error_response(
                    401, "a valid API key is needed: Authorization: Bearer KEY", "unauthorized"
                )
                response.headers["WWW-Authenticate"] = "Bearer"
                response.headers["X-Served-By"] = served_by
                metrics.observe("unauthorized", 401, time.perf_counter() - started)
                return response
        response = await call_next(request)
        response.headers["X-Served-By"] = served_by
        matched = getattr(request.scope.get("route"), "path", "unmatched")
        route = "/static" if path.startswith("/static/") else matched

        def observe() -> None:
            metrics.observe(route, response.status_code, time.perf_counter() - started)

        return timed_to_last_byte(response, observe)

    app.add_middleware(BodyLimit, limit=config.max_body_bytes)


def timed_to_last_byte(response: Response, observe: Callable[[], None]) -> Response:
    """``response``, calling ``observe()`` once its last byte is sent (or the client left), so a
    streamed reply is timed whole."""
    body = getattr(response, "body_iterator", None)
    if body is None:
        observe()
        return response

    async def timed() -> AsyncIterator[Any]:
        try:
            async for chunk in body:
                yield chunk
        finally:
            observe()

    response.body_iterator = timed()  # type: ignore[attr-defined]
    return response


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.kind, exc.param, exc.node)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            return error_response(
                422, "the body is not valid JSON; send a JSON object", "invalid_request_error", "body"
            )
        param = ".".join(str(p) for p in first["loc"] if p != "body")
        return error_response(
            422, f"{param or 'body'}: {first['msg']}", "invalid_request_error", param or None
        )

    @app.exception_handler(ClientLeft)
    async def client_left(request: Request, exc: ClientLeft) -> Response:
        return Response(status_code=499)  # nobody reads it; the metrics count it as nginx does

    @app.exception_handler(ModelError)
    async def unavailable(request: Request, exc: ModelError) -> Response:
        return error_response(503, str(exc), "model_unavailable")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(
            exc.status_code, str(exc.detail), "not_found" if exc.status_code == 404 else "http_error"
        )

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        return error_response(500, f"internal error: {type(exc).__name__}", "internal_error")


def workflow_or_404(service: Service, name: str) -> Workflow:
    if name not in service.workflows:
        raise ApiError(
            404, f"unknown workflow '{name}' (known: {', '.join(service.workflows)})", "not_found", "name"
        )
    return service.workflows[name]


def add_workflow_routes(app: FastAPI, service: Service) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "workflows": service.load_state}

    @app.get("/v1/workflows")
    async def list_workflows() -> dict[str, Any]:
        return {"workflows": [describe(wf) for wf in service.workflows.values()]}

    @app.get("/v1/workflows/{name}")
    async def show_workflow(name: str) -> dict[str, Any]:
        workflow = workflow_or_404(service, name)
        return {**describe(workflow), "spec": workflow.to_dict(), "mermaid": workflow.mermaid()}

    @app.get("/v1/workflows/{name}/graph.svg")
    def workflow_picture(name: str) -> Response:  # sync: FastAPI draws it off the event loop
        workflow_or_404(service, name)
        return Response(service.picture(name), media_type="image/svg+xml")

    @app.post("/v1/workflows/{name}/run")
    async def run_workflow(name: str, body: RunRequest, request: Request) -> Response:
        workflow_or_404(service, name)
        try:
            inputs = service.check_inputs(name, body.inputs)
        except WorkflowError as exc:
            raise ApiError(422, str(exc), "invalid_request_error", "inputs") from None
        if body.stream or "text/event-stream" in request.headers.get("accept", ""):
            return EventSourceResponse(stream_run(service, name, inputs, body.trace, body.options()))
        run = service.run_workflow(name, inputs, options=body.options())
        result = await unless_client_leaves(request, run)
        raise_for_item(result)
        return JSON(result_body(result, body.trace))


class ClientLeft(Exception):
    """The client of a plain (not streamed) request disconnected before its answer."""


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``await work``, cancelling it if the client disconnects first: a run's prompts then
    leave their model's batch at the next decode step instead of running to the end."""
    task = asyncio.ensure_future(work)

    async def client_gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        raise ClientLeft
    return task.result()


def describe(workflow: Workflow) -> dict[str, Any]:
    return {
        "name": workflow.spec.name,
        "description": workflow.spec.description,
        "input_schema": input_schema(workflow),
        "outputs": list(workflow.graph.outputs()),
    }


class Pump(Generic[Item, Result]):
    """What a model thread hands out while a coroutine runs, as an async iterator, then the
    coroutine's result: ``Pump(start)`` calls ``start(sink)``, and ``sink`` may be called from
    any thread. The one way the service streams (run events, chat text)."""

    def __init__(self, start: Callable[[Callable[[Item], None]], Awaitable[Result]]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._task = asyncio.ensure_future(start(self._put))

    def _put(self, item: Item) -> None:  # called on any thread
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def items(self) -> AsyncIterator[Item]:
        """Each item as it comes, until the coroutine is done and every item is out."""
        while not self._task.done() or not self._queue.empty():
            getter = asyncio.ensure_future(self._queue.get())
            await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()

    def result(self) -> Result:
        return self._task.result()

    def cancel(self) -> None:
        self._task.cancel()


async def stream_run(
    service: Service, name: str, inputs: dict[str, Any], trace: bool, options: RunOptions
) -> AsyncIterator[dict[str, str]]:
    """Server-sent events of one run: node_started, node_finished, then done or error. A client
    that goes away cancels its request (dropped if it still waits for a batch)."""
    run: Pump[dict[str, Any], RunResult] = Pump(
        lambda sink: service.run_workflow(name, inputs, sink, options)
    )
    try:
        async for event in run.items():
            yield {"event": event.pop("event"), "data": json_text(event)}
        result = run.result()
        if result.error is not None:
            yield {
                "event": "error",
                "data": json_text({"node": result.error.node, "message": result.error.message}),
            }
        else:
            yield {"event": "done", "data": json_text(result_body(result, trace))}
    except IftError as exc:
        yield {"event": "error", "data": json_text({"node": None, "message": str(exc)})}
    finally:
        run.cancel()


def add_openai_routes(app: FastAPI, service: Service) -> None:
    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return openai_api.model_list(list(dict.fromkeys([*service.workflows, *service.chat_models])))

    @app.post("/v1/chat/completions")
    async def chat(body: openai_api.ChatRequest, request: Request) -> Response:
        cache = "no-cache" not in request.headers.get("cache-control", "")
        reply = ChatReply(service, body, cache)  # checks the model and settings before any answer starts
        if body.stream:
            return StreamingResponse(reply.stream(), media_type="text/event-stream")
        return JSON(openai_api.completion(body.model, await unless_client_leaves(request, reply.text())))


class ChatReply:
    """The reply to a chat request: a workflow's answer to the last user message (its output
    node's text streams as it is generated), or a model's to the whole chat."""

    def __init__(self, service: Service, body: openai_api.ChatRequest, cache: bool = True) -> None:
        self.service, self.body = service, body
        overrides = checked(body.overrides())
        self.options = RunOptions(overrides, cache)
        self.workflow = body.model in service.workflows
        if self.workflow:
            try:
                self.text_input, self.output = service.chat_workflow_input(body.model)
            except WorkflowError as exc:
                raise ApiError(400, str(exc), "invalid_request_error", "model") from None
            self.output_node = service.workflows[body.model].graph.outputs()[self.output]
        else:
            if body.model not in service.chat_models:
                known = ", ".join([*service.workflows, *service.chat_models])
                raise ApiError(404, f"unknown model '{body.model}' (known: {known})", "not_found", "model")
            self.settings = GenerationSettings(**overrides)
        self.constraint = self._constraint()

    def _constraint(self) -> Constraint | None:
        """The request's ``response_format`` as a constraint: a 400 where it cannot be one."""
        form = self.body.response_format
        try:
            constraint = None if form is None else form.constraint()
            if constraint is not None and self.workflow:
                raise ApiError(
                    400,
                    f"response_format applies to models; the answers of workflow '{self.body.model}' have "
                    "the forms its nodes declare",
                    "invalid_request_error",
                    "response_format",
                )
            if constraint is not None:
                self.service.check_constraint(self.body.model)
        except (ConstraintError, ModelError) as exc:
            message = f"response_format: {exc}"
            raise ApiError(400, message, "invalid_request_error", "response_format") from None
        return constraint

    async def text(self, on_text: Callable[[str], None] | None = None) -> Completion:
        """The reply; ``on_text(new text)`` (called on a model's thread) as it grows."""
        body = self.body
        if self.workflow:

            def events(event: dict[str, Any]) -> None:
                if on_text and event["event"] == "token" and event["node"] == self.output_node:
                    if event["element"] is None:
                        on_text(event["text"])

            result = await self.service.run_workflow(
                body.model, {self.text_input: body.last_user_text()}, events, self.options
            )
            raise_for_item(result)
            return Completion(to_text(result.outputs[self.output]))
        messages = [m.model_dump(include={"role", "content"}) for m in body.messages]
        try:
            settings, constraint = self.settings, self.constraint
            return await self.service.chat_model(body.model, messages, settings, on_text, constraint)
        except ModelError as exc:
            raise ApiError(500, str(exc), "model_error", "model") from None

    async def stream(self) -> AsyncIterator[str]:
        """OpenAI chunks: the text as it is generated, whatever the parsed reply adds, the stop."""
        writer = openai_api.ChunkWriter(self.body.model)
        reply_text: Pump[str, Completion] = Pump(self.text)
        sent = ""
        try:
            async for piece in reply_text.items():
                sent += piece
                yield writer.chunk(piece)
            reply = reply_text.result()
            if reply.text != sent:
                yield writer.chunk(reply.text[len(sent) :] if reply.text.startswith(sent) else reply.text)
            yield writer.stop(reply)
            options = self.body.stream_options
            if options is not None and options.include_usage:
                yield writer.usage(reply)
        except ApiError as exc:
            yield writer.error(exc.message, exc.kind)
        except IftError as exc:
            yield writer.error(str(exc), "model_error")
        finally:
            reply_text.cancel()
        yield writer.done()


def add_page_routes(app: FastAPI, metrics: Metrics) -> None:
    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
