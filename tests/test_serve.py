"""`ift serve`: the API in-process (ASGI), batching across requests on a live uvicorn server, the
official OpenAI client, a real `ift serve` process (SIGTERM drains), and a bounded load test."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from ift_engine import MockModel, Workflow  # noqa: E402
from ift_engine.serve import ServeConfig, create_app  # noqa: E402
from ift_engine.serve.live import serving  # noqa: E402


def mock_flow(name: str = "echo", **options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": "two steps on the mock model",
        "inputs": {"text": {"type": "string", "description": "what to say"}},
        "model": {"name": "writer", "backend": "mock", "options": {"default": "hello", **options}},
        "nodes": [
            {"id": "draft", "instruction": "Say {text}", "inputs": {"text": "$input.text"}},
            {"id": "final", "instruction": "Polish {draft}", "inputs": {"draft": "draft.output"}},
        ],
    }


def app_for(*docs: dict[str, Any], **config: Any) -> Any:
    workflows = {doc["name"]: Workflow.from_dict(doc) for doc in docs}
    return create_app(ServeConfig(**{"cache": False, **config}), workflows)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(app_for(mock_flow())) as test_client:
        yield test_client


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((lines.get("event", "message"), json.loads(lines["data"])))
    return events


# -- the API in-process ----------------------------------------------------------------------------------


def test_health_listing_and_detail(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "workflows": {"echo": "ready"}}
    [listed] = client.get("/v1/workflows").json()["workflows"]
    assert listed["name"] == "echo" and listed["outputs"] == ["final"]
    assert listed["input_schema"]["properties"]["text"] == {"type": "string", "description": "what to say"}
    detail = client.get("/v1/workflows/echo").json()
    assert detail["spec"]["nodes"][0]["id"] == "draft" and "n_draft --> n_final" in detail["mermaid"]
    assert client.get("/v1/workflows/echo/graph.svg").text.lstrip().startswith("<?xml")


def test_run_returns_outputs_nodes_and_trace(client: TestClient) -> None:
    body = client.post("/v1/workflows/echo/run", json={"inputs": {"text": "hi"}, "trace": True}).json()
    assert body["outputs"] == {"final": "hello"} and set(body["nodes"]) == {"draft", "final"}
    assert body["trace"]["nodes"]["draft"]["prompt"] == [{"role": "user", "content": "Say hi"}]


def test_run_streams_node_events_then_done(client: TestClient) -> None:
    for request in (
        {"json": {"inputs": {"text": "hi"}, "stream": True}},
        {"json": {"inputs": {"text": "hi"}}, "headers": {"Accept": "text/event-stream"}},
    ):
        response = client.post("/v1/workflows/echo/run", **request)
        events = [(kind, data) for kind, data in sse_events(response.text) if kind != "token"]
        assert [(kind, data.get("node")) for kind, data in events] == [
            ("node_started", "draft"),
            ("node_finished", "draft"),
            ("node_started", "final"),
            ("node_finished", "final"),
            ("done", None),
        ]
        assert events[1][1]["output"] == "hello" and events[-1][1]["outputs"] == {"final": "hello"}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/workflows/nope/run", {}, 404, "unknown workflow 'nope' (known: echo)"),
        ("/v1/workflows/echo/run", {"inputs": {"txt": "hi"}}, 422, "unknown input 'txt' (declared: text)"),
        (
            "/v1/workflows/echo/run",
            {"inputs": {"text": 3}},
            422,
            "input 'text' must be of type string, not int",
        ),
        (
            "/v1/workflows/echo/run",
            {"inputs": {}, "trcae": True},
            422,
            "trcae: Extra inputs are not permitted",
        ),
        ("/v1/workflows/echo/run", {"inputs": "hi"}, 422, "inputs: Input should be a valid dictionary"),
        (
            "/v1/chat/completions",
            {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
            404,
            "unknown model 'nope'",
        ),
        (
            "/v1/chat/completions",
            {"model": "writer", "messages": []},
            422,
            "messages: List should have at least 1 item",
        ),
        (
            "/v1/chat/completions",
            {"model": "writer", "messages": [{"role": "user", "content": "x"}], "temperature": 99},
            422,
            "temperature",
        ),
    ],
)
def test_bad_requests_are_json_errors_naming_the_field(client, path, body, status, message) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
    assert "Traceback" not in response.text


def test_body_limit_and_broken_json(client: TestClient) -> None:
    big = client.post("/v1/workflows/echo/run", json={"inputs": {"text": "x" * 2_000_000}})
    assert big.status_code == 413 and "over" in big.json()["error"]["message"]
    broken = client.post(
        "/v1/workflows/echo/run", content=b'{"inputs": ', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422 and broken.json()["error"]["type"] == "invalid_request_error"
    assert client.get("/static/../app.py").status_code == 404  # nothing outside the static folder


def test_a_failing_node_is_a_500_naming_it() -> None:
    with TestClient(app_for(mock_flow(errors={"Polish": "the model refuses"}))) as client:
        response = client.post("/v1/workflows/echo/run", json={"inputs": {"text": "hi"}})
        assert response.status_code == 500
        assert response.json()["error"] == {
            "message": "node 'final': the model refuses",
            "type": "node_error",
            "param": None,
            "node": "final",
        }
        events = sse_events(
            client.post("/v1/workflows/echo/run", json={"inputs": {"text": "hi"}, "stream": True}).text
        )
        assert events[-1] == ("error", {"node": "final", "message": "the model refuses"})


def test_api_key() -> None:
    with TestClient(app_for(mock_flow(), api_key="s3cret")) as client:
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
        denied = client.get("/v1/workflows")
        assert denied.status_code == 401 and denied.headers["WWW-Authenticate"] == "Bearer"
        assert denied.headers["X-Served-By"] == client.get("/healthz").headers["X-Served-By"]  # refusals too
        assert client.get("/v1/workflows", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/workflows", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/metrics").status_code == 401


def test_openai_client_chats_with_a_workflow_and_a_model(client: TestClient) -> None:
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)
    reply = api.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hello" and reply.choices[0].finish_reason == "stop"
    chunks = list(
        api.chat.completions.create(model="writer", messages=[{"role": "user", "content": "hi"}], stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "hello"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {m.id for m in api.models.list()} >= {"echo", "writer", "smollm2-135m-instruct"}


def test_metrics_count_requests_and_batches(client: TestClient) -> None:
    client.post("/v1/workflows/echo/run", json={"inputs": {"text": "hi"}})
    client.post("/v1/workflows/nope/run", json={})
    text = client.get("/metrics").text
    assert 'ift_requests_total{route="/v1/workflows/{name}/run",status="200"} 1.0' in text
    assert 'ift_errors_total{route="/v1/workflows/{name}/run"} 1.0' in text
    assert (
        'ift_batch_size_count{model="writer"} 2.0' in text and "ift_queue_depth" in text
    )  # one call per node


# -- requests that meet at the model's worker ------------------------------------------------------------------------------


async def post_all(
    url: str, bodies: list[dict[str, Any]], concurrency: int, path: str = "/v1/workflows/echo/run"
) -> list[httpx.Response]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def one(body: dict[str, Any]) -> httpx.Response:
            async with limit:
                return await http.post(path, json=body)

        return await asyncio.gather(*(one(b) for b in bodies))


def test_concurrent_requests_share_batched_model_calls_and_fail_alone() -> None:
    doc = mock_flow(delay=0.1, errors={"Say poison": "bad input for the model"})
    app = app_for(doc)
    bodies = [{"inputs": {"text": f"t{i}"}} for i in range(7)] + [{"inputs": {"text": "poison"}}]
    with serving(app) as url:
        responses = asyncio.run(post_all(url, bodies, concurrency=8))
        model = app.state.service.workflows["echo"].pool.get(  # while it serves: closing releases it
            app.state.service.workflows["echo"].graph.node("draft").model
        )
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 7 + [500], [r.text for r in responses]
    assert responses[-1].json()["error"]["node"] == "draft"
    assert isinstance(model, MockModel)
    sizes = [len(call.prompts) for call in model.calls if call.prompts[0].startswith("Say")]
    assert max(sizes) >= 4, sizes  # requests that arrived together went to the model together


def test_a_plain_request_whose_client_leaves_gives_up_its_next_nodes() -> None:
    app = app_for(mock_flow(delay=1.0))
    with serving(app) as url:
        with pytest.raises(httpx.ReadTimeout):  # the client hangs up during the first node
            httpx.post(f"{url}/v1/workflows/echo/run", json={"inputs": {"text": "bye"}}, timeout=0.4)
        time.sleep(2.0)  # the first node's call ends; the second node would have started by now
        assert httpx.get(f"{url}/healthz").status_code == 200
        service = app.state.service
        model = service.workflows["echo"].pool.get(service.workflows["echo"].graph.node("draft").model)
    assert [call.prompts for call in model.calls] == [("Say bye",)]  # "Polish ..." never ran


def test_concurrent_requests_on_a_real_model_get_their_one_at_a_time_answers(tiny_causal_dir: Path) -> None:
    texts = [f"Tell me about bees, number {i}." for i in range(8)]
    with TestClient(app_for(tiny_flow(tiny_causal_dir))) as one_by_one:
        alone = [
            one_by_one.post("/v1/workflows/tiny/run", json={"inputs": {"text": t}}).json()["outputs"]
            for t in texts
        ]
    app = app_for(tiny_flow(tiny_causal_dir))
    with serving(app) as url:
        responses = asyncio.run(
            post_all(url, [{"inputs": {"text": t}} for t in texts], 8, "/v1/workflows/tiny/run")
        )
        metrics = httpx.get(f"{url}/metrics").text
    assert [r.json()["outputs"] for r in responses] == alone
    steps = re.search(r'ift_batch_size_count\{model="([^"]+)"\} (\S+)', metrics)
    alone_steps = re.search(r'ift_batch_size_bucket\{le="1.0",model="[^"]+"\} (\S+)', metrics)
    assert (
        steps and alone_steps and float(alone_steps[1]) < float(steps[2])
    )  # some steps decoded several rows


def test_bounded_load_on_the_mock_backend() -> None:
    app = app_for(mock_flow())
    with serving(app) as url:
        started = time.perf_counter()
        responses = asyncio.run(
            post_all(url, [{"inputs": {"text": f"t{i}"}} for i in range(300)], concurrency=32)
        )
        seconds = time.perf_counter() - started
    assert [r.status_code for r in responses].count(200) == 300
    print(f"300 requests at 32 concurrent: {300 / seconds:.0f} requests/s")


# -- a real `ift serve` process --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ift_serve(folder: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """`ift serve FOLDER ARGS` as a real process on a free port, and its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ift_engine.cli", "serve", str(folder), "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "IFT_ENGINE_LOAD_PLUGINS": ""},
    )
    return process, f"http://127.0.0.1:{port}"


def wait_until_ready(
    process: subprocess.Popen[bytes], url: str, workflows: dict[str, str], seconds: float
) -> None:
    """Until ``/healthz`` reports ``workflows``; fails the test (with the server's log) if it
    never does or the server exits."""
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None:
        try:
            health = httpx.get(f"{url}/healthz", timeout=5)
            if health.status_code == 200 and health.json()["workflows"] == workflows:
                return
        except httpx.HTTPError:
            pass  # not listening yet (Ray's proxy answers 404 until the app is deployed)
        time.sleep(0.2)
    process.kill()
    log = process.stdout.read().decode() if process.stdout else ""
    pytest.fail(f"ift serve never reported {workflows} ready:\n{log[-3000:]}")


def test_ift_serve_process_answers_the_openai_client_and_drains_on_sigterm(tmp_path: Path) -> None:
    openai = pytest.importorskip("openai")
    (tmp_path / "echo.yaml").write_text(json.dumps(mock_flow(delay=1.0)))
    process, url = start_ift_serve(tmp_path, "--api-key", "k")
    try:
        wait_until_ready(process, url, {"echo": "ready"}, 60)
        api = openai.OpenAI(base_url=f"{url}/v1", api_key="k")
        reply = api.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "hello"

        slow: dict[str, Any] = {}
        request = threading.Thread(
            target=lambda: slow.update(
                response=httpx.post(
                    f"{url}/v1/workflows/echo/run",
                    json={"inputs": {"text": "late"}},
                    headers={"Authorization": "Bearer k"},
                    timeout=30,
                )
            )
        )
        request.start()
        time.sleep(0.5)  # the request is in flight (the mock takes 1 s per node)
        process.send_signal(signal.SIGTERM)
        request.join(30)
        assert slow["response"].status_code == 200 and slow["response"].json()["outputs"] == {
            "final": "hello"
        }
        # uvicorn drains, shuts down, then re-raises the signal so the exit says how it ended.
        assert process.wait(30) == 0  # drained, then a clean exit
        log = process.stdout.read().decode() if process.stdout else ""
        assert "Shutting down" in log and "Finished server process" in log, log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


# -- streamed text ---------------------------------------------------------------------------------


def test_streamed_runs_carry_token_events_of_each_node() -> None:
    with TestClient(app_for(mock_flow(default="bees dance to talk"))) as client:
        events = sse_events(
            client.post("/v1/workflows/echo/run", json={"inputs": {"text": "hi"}, "stream": True}).text
        )
    tokens = [(data["node"], data["text"]) for kind, data in events if kind == "token"]
    assert [t for n, t in tokens if n == "draft"] == ["bees ", "dance ", "to ", "talk"]
    assert "".join(t for n, t in tokens if n == "final") == "bees dance to talk"
    kinds = [kind for kind, data in events if data.get("node") == "final"]
    assert kinds[0] == "node_started" and kinds[-1] == "node_finished" and "token" in kinds


def test_openai_stream_hands_out_the_reply_as_it_grows() -> None:
    openai = pytest.importorskip("openai")
    with TestClient(app_for(mock_flow(default="bees dance to talk"))) as streaming:
        api = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=streaming)
        for model in ("echo", "writer"):  # a workflow (its output node streams) and a model
            chunks = list(
                api.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}], stream=True
                )
            )
            texts = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
            assert texts == ["bees ", "dance ", "to ", "talk"], model
            assert (
                chunks[0].choices[0].delta.role == "assistant"
                and chunks[-1].choices[0].finish_reason == "stop"
            )


def test_hf_streaming_adds_up_to_the_batched_answers(tiny_causal_dir: Path) -> None:
    from ift_engine import GenerationSettings
    from ift_engine.models.hf_causal import CausalLMOptions, HFCausalLM

    model = HFCausalLM.load("tiny", str(tiny_causal_dir), CausalLMOptions(device="cpu", batch_size=2))
    prompts = [
        [{"role": "user", "content": text}]
        for text in ("Bees dance.", "The hotel was clean and quiet.", "Tides")
    ]
    settings = GenerationSettings(max_new_tokens=12)
    pieces: dict[int, str] = {}
    streamed = model.generate_stream(
        prompts, settings, lambda i, t: pieces.update({i: pieces.get(i, "") + t})
    )
    assert streamed == model.generate(prompts, settings)
    assert [pieces.get(i, "").strip() for i in range(3)] == streamed  # batches of 2: offsets kept


def test_ift_serve_with_two_worker_processes(tmp_path: Path) -> None:
    (tmp_path / "echo.yaml").write_text(json.dumps(mock_flow()))
    process, url = start_ift_serve(tmp_path, "--workers", "2")
    try:
        wait_until_ready(process, url, {"echo": "ready"}, 60)
        body = httpx.post(f"{url}/v1/workflows/echo/run", json={"inputs": {"text": "hi"}}).json()
        assert body["outputs"] == {"final": "hello"}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    log = process.stdout.read().decode() if process.stdout else ""
    assert log.count("Application startup complete") == 2, log


def test_ift_serve_on_ray_with_two_replicas_answers_as_one_process(
    tiny_causal_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ray.serve")
    (tmp_path / "tiny.yaml").write_text(json.dumps(tiny_flow(tiny_causal_dir)))
    texts = [f"Tell me about bees, number {i}." for i in range(12)]
    with TestClient(app_for(tiny_flow(tiny_causal_dir))) as here:
        expected = [
            here.post("/v1/workflows/tiny/run", json={"inputs": {"text": t}}).json()["outputs"] for t in texts
        ]
    process, url = start_ift_serve(
        tmp_path, "--ray", "--replicas", "2", "--replica-cpus", "0.5", "--no-cache"
    )
    try:
        wait_until_ready(process, url, {"tiny": "ready"}, 180)
        bodies = [{"inputs": {"text": t}} for t in texts]
        responses = asyncio.run(post_all(url, bodies, 12, "/v1/workflows/tiny/run"))
        assert [r.json()["outputs"] for r in responses] == expected
        assert len({r.headers["x-served-by"] for r in responses}) == 2  # both replicas answered
        chat = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": texts[0]}]},
        )
        assert chat.json()["choices"][0]["message"]["content"] == expected[0]["answer"]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    log = process.stdout.read().decode() if process.stdout else ""
    assert code == 0 and "2 replica(s) on Ray" in log, log


def test_bad_serve_arguments_are_one_line_errors(tmp_path: Path) -> None:
    for args, message in (
        ([str(tmp_path / "missing")], "no such workflow file or folder"),
        ([str(tmp_path)], "no workflow files in"),
        ([str(tmp_path), "--workers", "0"], "--workers must be between 1 and 64"),
        ([str(tmp_path), "--replicas", "2"], "--replicas and --ray-address belong to --ray"),
        ([str(tmp_path), "--ray", "--workers", "2"], "with --ray say --replicas N"),
        ([str(tmp_path), "--ray", "--replicas", "0"], "--replicas must be between 1 and 256"),
        ([str(tmp_path), "--ray", "--ray-address", "nowhere"], "give HOST:PORT of the cluster's head"),
    ):
        if len(args) > 1:
            (tmp_path / "echo.yaml").write_text(json.dumps(mock_flow()))
        done = subprocess.run(
            [sys.executable, "-m", "ift_engine.cli", "serve", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_chat_settings_do_not_grow_the_workers(client: TestClient) -> None:
    pool = client.app.state.service.pools[0]
    client.post("/v1/workflows/echo/run", json={"inputs": {"text": "hi"}})
    before = len(pool._workers)
    for seed in range(5):
        body = {
            "model": "writer",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.5,
            "seed": seed,
        }
        assert (
            client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
            == "hello"
        )
    assert len(pool._workers) == before  # the workflow's model already has its worker, whatever the settings


# -- OpenAI replies, run options -------------------------------------------------------------------------------


def tiny_flow(folder: Path) -> dict[str, Any]:
    return {
        "name": "tiny",
        "inputs": {"text": "string"},
        "model": {"name": str(folder), "options": {"device": "cpu"}},
        "generation": {"max_new_tokens": 12},
        "nodes": [{"id": "answer", "instruction": "{text}", "inputs": {"text": "$input.text"}}],
    }


def test_chat_replies_carry_usage_and_finish_reason(tiny_causal_dir: Path) -> None:
    with TestClient(app_for(tiny_flow(tiny_causal_dir))) as client:
        base = {"model": str(tiny_causal_dir), "messages": [{"role": "user", "content": "Bees dance."}]}
        cut = client.post("/v1/chat/completions", json={**base, "max_tokens": 2}).json()
        assert cut["choices"][0]["finish_reason"] == "length"
        assert cut["usage"]["completion_tokens"] == 2 and cut["usage"]["prompt_tokens"] > 2
        assert cut["usage"]["total_tokens"] == cut["usage"]["prompt_tokens"] + 2
        stream = client.post(
            "/v1/chat/completions",
            json={**base, "max_tokens": 2, "stream": True, "stream_options": {"include_usage": True}},
        ).text
        chunks = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith("data: {")]
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == cut["usage"]
        assert stream.rstrip().endswith("data: [DONE]")
        for bad, field in (
            ({"n": 3}, "n"),
            ({"seed": 2**70}, "seed"),
            ({"max_tokens": -5}, "max_new_tokens"),
        ):
            response = client.post("/v1/chat/completions", json={**base, **bad})
            assert response.status_code == 422 and response.json()["error"]["param"] == field, response.text
        workflow = {**base, "model": "tiny"}
        assert client.post("/v1/chat/completions", json={**workflow, "max_tokens": -5}).status_code == 422
        short = client.post("/v1/chat/completions", json={**workflow, "max_tokens": 1}).json()
        whole = client.post("/v1/chat/completions", json=workflow).json()
        assert len(short["choices"][0]["message"]["content"]) < len(whole["choices"][0]["message"]["content"])


def test_the_run_endpoint_takes_generation_overrides_and_cache_false(tiny_causal_dir: Path) -> None:
    with TestClient(app_for(tiny_flow(tiny_causal_dir), cache=True)) as client:
        run = "/v1/workflows/tiny/run"
        inputs = {"inputs": {"text": "Bees dance."}}
        whole = client.post(run, json=inputs).json()
        assert client.post(run, json=inputs).json()["nodes"]["answer"]["cached"] is True
        fresh = client.post(run, json={**inputs, "cache": False}).json()
        assert fresh["nodes"]["answer"]["cached"] is False and fresh["outputs"] == whole["outputs"]
        short = client.post(run, json={**inputs, "generation": {"max_new_tokens": 1}}).json()
        assert len(short["outputs"]["answer"]) < len(whole["outputs"]["answer"])
        bad = client.post(run, json={**inputs, "generation": {"max_new_tokens": 0}})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "generation.max_new_tokens"
        unknown = client.post(run, json={**inputs, "generation": {"beams": 4}})
        assert unknown.status_code == 422 and "generation.beams" in unknown.json()["error"]["message"]


def test_bodies_over_the_limit_are_413_however_they_are_sent_and_bad_json_is_named(
    client: TestClient,
) -> None:
    def chunks() -> Any:
        for _ in range(32):
            yield b"x" * 65536  # 2 MiB in chunks, no Content-Length

    response = client.post(
        "/v1/workflows/echo/run", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["error"]["type"] == "too_large"
    broken = client.post(
        "/v1/workflows/echo/run",
        content=b'{"inputs": {"text": ',
        headers={"Content-Type": "application/json"},
    )
    assert (
        broken.status_code == 422
        and broken.json()["error"]["message"] == "the body is not valid JSON; send a JSON object"
    )
    small = client.post(
        "/v1/workflows/echo/run",
        content=json.dumps({"inputs": {"text": "hi"}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert small.status_code == 200  # a body within the limit reaches the app whole


def test_a_busy_port_is_a_one_line_error_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "echo.yaml").write_text(json.dumps(mock_flow()))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "ift_engine.cli", "serve", str(tmp_path), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert (
        done.returncode == 2
        and f"--port {port}: cannot listen" in done.stderr
        and "Traceback" not in done.stderr
    ), done.stderr


def test_metrics_time_streams_to_their_last_byte_and_answers_to_their_first_token(
    tiny_causal_dir: Path,
) -> None:
    with TestClient(app_for(mock_flow(delay=0.3), tiny_flow(tiny_causal_dir))) as client:
        client.post("/v1/workflows/echo/run", json={"inputs": {"text": "hi"}, "stream": True})
        client.get("/static/app.js")
        model = str(tiny_causal_dir)
        client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
        )
        text = client.get("/metrics").text
    seconds = next(
        line
        for line in text.splitlines()
        if line.startswith('ift_request_seconds_sum{route="/v1/workflows/{name}/run"}')
    )
    assert float(seconds.split()[-1]) >= 0.6  # two nodes of 0.3 s each, streamed: timed to the end
    assert 'ift_requests_total{route="/static",status="200"} 1.0' in text
    assert f'ift_time_to_first_token_seconds_count{{model="{model}"}} 1.0' in text
    assert f'ift_time_per_output_token_seconds_count{{model="{model}"}} 1.0' in text
    assert f'ift_generated_tokens_total{{model="{model}"}}' in text


def test_the_served_workflows_and_chat_share_one_pool_so_each_model_loads_once(tmp_path: Path) -> None:
    for name in ("one", "two"):  # both use the mock model "writer"
        (tmp_path / f"{name}.yaml").write_text(json.dumps(mock_flow(name)))
    app = create_app(ServeConfig(paths=[str(tmp_path)], cache=False))
    with TestClient(app) as client:
        chat = client.post(
            "/v1/chat/completions", json={"model": "writer", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == "hello"
        service = app.state.service
        [pool] = service.pools
        models = {id(pool.get(wf.graph.node("draft").model)) for wf in service.workflows.values()}
        assert len(models) == 1  # one loaded "writer" for both workflows and the chat
