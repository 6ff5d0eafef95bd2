"""Serving under concurrent load: ``ift serve`` beside ``transformers serve --continuous-batching``
on the same model folder and the same chat requests, on loopback, bounded.

    python benchmarks/bench_serve.py [--rounds 2] [--concurrency 1 4 16 64] [--max-tokens 48]
                                     [--rate 2] [--device cpu] [--quick]

Servers, each its own process, all started first: the peer; ``ift serve`` on the PyTorch model;
``ift serve`` on its int8 and int4 exports. Each round sends, at each concurrency, the same
distinct chat requests (greedy, at most ``--max-tokens`` new tokens, streamed with
``include_usage``) to each server in turn, the order rotated round by round, so machine drift
hits all alike. Per server and concurrency: generated tokens/s, p50/p95 latency, p50 time to
first token. A Poisson run sends the same requests to each server at ``--rate`` requests/s with
exponential gaps (one seeded schedule for all), as independent users would. The int4 export's
own batched speed (``generate`` on all prompts at once, in this process, between rounds) is the
ceiling the service is held against. A two-node workflow (summarize.yaml) runs one request at a
time and all at once on every ``ift serve`` backend.

Prints a table and writes benchmarks/results/serve-<cpu|gpu>.{json,md}. ``--quick`` is a
smoke run (tiny counts) that the test suite uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from machine import describe_machine, markdown_table, save_results

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results"
SUMMARIZE = ROOT / "workflows" / "summarize.yaml"
TOPICS = [
    "how honeybees tell each other where flowers are",
    "why the sky looks blue",
    "how early bicycles worked",
    "how vaccines train the immune system",
    "growing tomatoes on a balcony",
    "sleeping well",
    "how a refrigerator moves heat",
    "the water cycle",
    "learning a second language as an adult",
    "how bridges carry loads",
    "why cats purr",
    "compound interest",
    "how volcanoes form",
    "writing a clear email",
    "how bees survive the winter",
    "how solar panels make electricity",
]


def prompts(count: int) -> list[str]:
    return [f"Explain {TOPICS[i % len(TOPICS)]} in three sentences (request {i})." for i in range(count)]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, name: str, command: list[str], health: str, model: str) -> None:
        self.name, self.command, self.health, self.model = name, command, health, model
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)

    def start(self) -> None:
        args = [a.replace("PORT", str(self.port)) for a in self.command]
        self.process = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited; see {self.log.name}")
            try:
                response = httpx.get(self.url + self.health, timeout=2)
                if response.status_code == 200 and "loading" not in response.text:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise SystemExit(f"{self.name} not ready after {seconds:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)


@contextmanager
def running(servers: list[Server]) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(900)
        yield
    finally:
        for server in servers:
            server.stop()


async def chat(http: httpx.AsyncClient, server: Server, text: str, max_tokens: int) -> dict[str, Any]:
    """One streamed chat completion: latency, time to first token, tokens, text."""
    body = {
        "model": server.model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first, pieces, tokens = None, [], None
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                content = choice.get("delta", {}).get("content")
                if content:
                    first = first or time.perf_counter()
                    pieces.append(content)
    ended = time.perf_counter()
    return {
        "latency": ended - started,
        "ttft": (first or ended) - started,
        "tokens": tokens,
        "text": "".join(pieces),
        "ok": response.status_code == 200,
    }


async def load(
    server: Server, texts: list[str], concurrency: int, max_tokens: int
) -> tuple[float, list[Any]]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=server.url, timeout=900) as http:

        async def one(text: str) -> dict[str, Any]:
            async with limit:
                return await chat(http, server, text, max_tokens)

        started = time.perf_counter()
        results = await asyncio.gather(*(one(t) for t in texts))
        return time.perf_counter() - started, list(results)


async def arrivals(
    server: Server, texts: list[str], gaps: list[float], max_tokens: int
) -> tuple[float, list[Any]]:
    """Request ``i`` sent ``sum(gaps[:i + 1])`` seconds after the start, whatever is in flight."""
    async with httpx.AsyncClient(base_url=server.url, timeout=900) as http:
        started = time.perf_counter()

        async def one(text: str, at: float) -> dict[str, Any]:
            await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
            return await chat(http, server, text, max_tokens)

        schedule = [sum(gaps[: i + 1]) for i in range(len(gaps))]
        results = await asyncio.gather(*(one(t, at) for t, at in zip(texts, schedule, strict=True)))
        return time.perf_counter() - started, list(results)


def poisson_gaps(count: int, rate: float, seed: int = 0) -> list[float]:
    import random

    draw = random.Random(seed)
    return [draw.expovariate(rate) for _ in range(count)]


def count_tokens(tokenizer: Any, results: list[dict[str, Any]]) -> int:
    """Generated tokens: the server's usage where it reports one, else the text re-tokenized."""
    return sum(
        r["tokens"] if r["tokens"] is not None else len(tokenizer(r["text"])["input_ids"]) for r in results
    )


def summary(
    server: str, concurrency: int, runs: list[tuple[float, list[Any]]], tokenizer: Any
) -> dict[str, Any]:
    results = [r for _, rs in runs for r in rs]
    latencies = sorted(r["latency"] for r in results)
    return {
        "server": server,
        "concurrency": concurrency,
        "requests": len(results),
        "failed": sum(not r["ok"] for r in results),
        "tok_s": sum(count_tokens(tokenizer, rs) for _, rs in runs) / sum(s for s, _ in runs),
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "ttft_p50": statistics.median(r["ttft"] for r in results),
    }


def backend_batched(folder: Path, texts: list[str], max_tokens: int, device: str) -> float:
    """The int4 export's own tokens/s, all prompts in one ``generate`` call, in this process."""
    from ift_engine.models.base import GenerationSettings
    from ift_engine.models.ort import OnnxOptions
    from ift_engine.onnx.backend import OnnxModel

    options = OnnxOptions(quantize="int4", device=device, batch_size=len(texts))
    model = OnnxModel.load("int4", OnnxModel.prepare(str(folder), options), options)
    settings = GenerationSettings(max_new_tokens=max_tokens)
    chats = [[{"role": "user", "content": t}] for t in texts]
    model.generate(chats[:1], settings)
    started = time.perf_counter()
    answers = model.generate(chats, settings)
    seconds = time.perf_counter() - started
    tokenizer: Any = model.tokenizer  # type: ignore[attr-defined]
    return sum(len(tokenizer(a)["input_ids"]) for a in answers) / seconds


def servers_for(folder: Path, workdir: Path, device: str) -> list[Server]:
    scripts = Path(sys.executable).parent
    ift = [str(scripts / "ift"), "serve", "--port", "PORT", "--no-cache"]
    servers = [
        Server(
            "transformers serve --continuous-batching",
            [
                str(scripts / "transformers"),
                "serve",
                "--continuous-batching",
                str(folder),
                "--host",
                "127.0.0.1",
                "--port",
                "PORT",
                "--device",
                device,
            ],
            "/health",
            str(folder),
        )
    ]
    for name, options in (("pytorch", {}), ("int8", {"quantize": "int8"}), ("int4", {"quantize": "int4"})):
        model: dict[str, Any] = {"name": str(folder), "options": {"device": device, **options}}
        if options:
            model["backend"] = "onnx"
        flows = workdir / name
        flows.mkdir()
        chat_flow = {
            "name": "chat",
            "inputs": {"text": "string"},
            "model": model,
            "nodes": [{"id": "answer", "instruction": "{text}", "inputs": {"text": "$input.text"}}],
        }
        (flows / "chat.yaml").write_text(json.dumps(chat_flow))
        summarize = json.loads(json.dumps(yaml_dict(SUMMARIZE)))
        summarize["model"] = model
        (flows / "summarize.yaml").write_text(json.dumps(summarize))
        servers.append(Server(f"ift serve, {name}", [*ift, str(flows)], "/healthz", str(folder)))
    return servers


def yaml_dict(path: Path) -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load(path.read_text()))


async def workflow_runs(server: Server, texts: list[str], concurrency: int) -> tuple[float, list[float]]:
    """summarize.yaml on each text, ``concurrency`` at a time: total seconds and each latency."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=server.url, timeout=900) as http:

        async def one(text: str) -> float:
            async with limit:
                began = time.perf_counter()
                response = await http.post("/v1/workflows/summarize/run", json={"inputs": {"text": text}})
                response.raise_for_status()
                return time.perf_counter() - began

        started = time.perf_counter()
        latencies = await asyncio.gather(*(one(t) for t in texts))
        return time.perf_counter() - started, list(latencies)


def flow_rows(flows: dict[tuple[str, int], list[tuple[float, list[float]]]]) -> list[dict[str, Any]]:
    rows = []
    for (server, concurrency), runs in sorted(flows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        latencies = sorted(x for _, xs in runs for x in xs)
        rows.append(
            {
                "server": server,
                "concurrency": concurrency,
                "requests": len(latencies),
                "runs_s": len(latencies) / sum(seconds for seconds, _ in runs),
                "p50": statistics.median(latencies),
            }
        )
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rate", type=float, default=2.0, help="requests/s of the Poisson run (0: none)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", help="a model folder (default: the embedded SmolLM2, converted once)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round, 2 tokens, concurrency 1 and 2"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.concurrency, args.max_tokens, args.rate = 1, [1, 2], 2, 20.0
    args.top = 16 if 16 in args.concurrency else max(args.concurrency)  # the targets' concurrency
    return args


POISSON = "Poisson"  # the concurrency column of the Poisson run


class Measurements:
    """Everything one benchmark run collects, keyed by server name and concurrency."""

    def __init__(self) -> None:
        self.chats: dict[tuple[str, int | str], list[tuple[float, list[Any]]]] = {}
        self.flows: dict[tuple[str, int], list[tuple[float, list[float]]]] = {}
        self.ceiling: list[float] = []

    def one_round(self, args: argparse.Namespace, servers: list[Server], folder: Path, round_: int) -> None:
        order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
        for concurrency in args.concurrency:
            texts = prompts(max(4, concurrency) if not args.quick else concurrency)
            for server in order:
                result = asyncio.run(load(server, texts, concurrency, args.max_tokens))
                self.chats.setdefault((server.name, concurrency), []).append(result)
                print(
                    f"round {round_ + 1}, {concurrency} at once, {server.name}: {result[0]:.1f} s",
                    file=sys.stderr,
                )
        if args.rate > 0:
            count = 4 if args.quick else 32
            gaps = poisson_gaps(count, args.rate, seed=round_)
            for server in order:
                result = asyncio.run(arrivals(server, prompts(count), gaps, args.max_tokens))
                self.chats.setdefault((server.name, POISSON), []).append(result)
        self.ceiling.append(backend_batched(folder, prompts(args.top), args.max_tokens, args.device))
        for server in order:
            if not server.name.startswith("ift serve"):
                continue
            for concurrency in (1, args.top):
                texts = prompts(args.top)
                self.flows.setdefault((server.name, concurrency), []).append(
                    asyncio.run(workflow_runs(server, texts, concurrency))
                )


def main() -> None:
    args = parse_args()
    from transformers import AutoTokenizer

    from ift_engine.plugins import components

    folder = (
        Path(args.model) if args.model else components().model_aliases.get("smollm2-135m-instruct").locate()
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    measured = Measurements()
    with tempfile.TemporaryDirectory() as workdir:
        servers = servers_for(folder, Path(workdir), args.device)
        with running(servers):
            for server in servers:
                asyncio.run(load(server, prompts(1), 1, args.max_tokens))  # warm: first calls compile kernels
            for round_ in range(args.rounds):
                measured.one_round(args, servers, folder, round_)
    order = sorted(measured.chats.items(), key=lambda kv: (str(kv[0][1]).zfill(8), kv[0][0]))
    rows = [summary(name, c, data, tokenizer) for (name, c), data in order]
    report(args, rows, max(measured.ceiling), flow_rows(measured.flows))


def target_lines(
    args: argparse.Namespace, rows: list[dict[str, Any]], ceiling: float, flows: list[dict[str, Any]]
) -> list[str]:
    def at(server: str, concurrency: int | str, table: list[dict[str, Any]] = rows) -> dict[str, Any]:
        return next(r for r in table if r["server"].endswith(server) and r["concurrency"] == concurrency)

    top = args.top
    peer = at("--continuous-batching", top)
    lines = [
        f"{top} at once, int4 export: {at('int4', top)['tok_s'] / peer['tok_s']:.2f}x the peer's tokens/s (target 2x), "
        f"p50 latency {at('int4', top)['p50']:.2f} s vs the peer's {peer['p50']:.2f} s",
        f"{top} at once, PyTorch: {at('pytorch', top)['tok_s'] / peer['tok_s']:.2f}x the peer's tokens/s (target 1.0x)",
        f"{top} at once, int4 export: {at('int4', top)['tok_s'] / ceiling:.2f}x the backend's own batched "
        f"{ceiling:.1f} tokens/s (target 0.8x)",
    ]
    if 4 in args.concurrency and 1 in args.concurrency:
        for name in ("pytorch", "int8", "int4"):
            lines.append(
                f"{name}: p50 latency at 4 at once {at(name, 4)['p50'] / at(name, 1)['p50']:.2f}x the one-request latency (target <= 1.5x)"
            )
    for name in ("pytorch", "int8", "int4"):
        gain = at(name, top, flows)["runs_s"] / at(name, 1, flows)["runs_s"]
        lines.append(
            f"summarize.yaml (two nodes) on {name}: {top} requests at once {gain:.2f}x the runs/s of one at a time"
        )
    if args.rate > 0:
        poisson = at("int4", POISSON)["p50"] / at("--continuous-batching", POISSON)["p50"]
        lines.append(f"Poisson arrivals at {args.rate:g}/s: int4 p50 latency {poisson:.2f}x the peer's")
    return lines


def report(
    args: argparse.Namespace, rows: list[dict[str, Any]], ceiling: float, flows: list[dict[str, Any]]
) -> None:
    lines = target_lines(args, rows, ceiling, flows)
    columns = [
        ("server", "server"),
        ("concurrency", "at once"),
        ("requests", "requests"),
        ("failed", "failed"),
        ("tok_s", "tokens/s"),
        ("p50", "p50 latency s"),
        ("p95", "p95 latency s"),
        ("ttft_p50", "p50 first token s"),
    ]
    flow_columns = [
        ("server", "server"),
        ("concurrency", "at once"),
        ("requests", "runs"),
        ("runs_s", "runs/s"),
        ("p50", "p50 latency s"),
    ]
    table = (
        markdown_table(rows, columns)
        + "\n\nsummarize.yaml (two nodes):\n\n"
        + markdown_table(flows, flow_columns)
    )
    print(table)
    print("\n".join(lines))
    machine = describe_machine()
    save_results(
        RESULTS / f"serve-{'gpu' if args.device == 'cuda' else 'cpu'}{'-quick' if args.quick else ''}",
        "Serving under concurrent load: ift serve and transformers serve --continuous-batching",
        f"SmolLM2-135M-Instruct (the embedded model), distinct chat requests, greedy, at most {args.max_tokens} "
        f"new tokens, streamed; {args.rounds} rounds, servers in rotated order; at once = concurrent clients, "
        f"{POISSON} = {4 if args.quick else 32} requests arriving at {args.rate:g}/s; loopback; device {args.device}.",
        table,
        lines,
        machine,
        {"rows": rows, "backend_batched_tok_s": ceiling, "workflows": flows},
    )


if __name__ == "__main__":
    main()
