"""A bounded load test of ``ift serve`` on loopback: many requests at a fixed concurrency on the
mock backend (the server's own cost, no model time), then latency percentiles, errors, and the
server's memory before, halfway and after (it should stay flat).

    python benchmarks/load_serve.py [--requests 2000] [--concurrency 32]

Stops by itself. Prints a table and writes benchmarks/results/load-serve-cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from pathlib import Path

import httpx
from machine import describe_machine, markdown_table, save_results

from ift_engine.serve import ServeConfig, create_app
from ift_engine.serve.live import serving
from ift_engine.workflow import Workflow

RESULTS = Path(__file__).parent / "results"
FLOW = {
    "name": "echo",
    "inputs": {"text": "string"},
    "model": {"name": "writer", "backend": "mock", "options": {"default": "hello"}},
    "nodes": [
        {"id": "draft", "instruction": "Say {text}", "inputs": {"text": "$input.text"}},
        {"id": "final", "instruction": "Polish {draft}", "inputs": {"draft": "draft.output"}},
    ],
}


def rss_mib() -> float:
    """The resident memory of this process (the server runs in it), from /proc."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


async def load(url: str, requests: int, concurrency: int, memory: list[float]) -> list[tuple[float, int]]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def one(i: int) -> tuple[float, int]:
            async with limit:
                started = time.perf_counter()
                response = await http.post("/v1/workflows/echo/run", json={"inputs": {"text": f"t{i}"}})
                if i == requests // 2:
                    memory.append(rss_mib())
                return time.perf_counter() - started, response.status_code

        return await asyncio.gather(*(one(i) for i in range(requests)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    app = create_app(ServeConfig(cache=False), {"echo": Workflow.from_dict(FLOW)})
    with serving(app) as url:
        asyncio.run(load(url, 200, args.concurrency, []))  # warm up
        memory = [rss_mib()]
        started = time.perf_counter()
        results = asyncio.run(load(url, args.requests, args.concurrency, memory))
        seconds = time.perf_counter() - started
        memory.append(rss_mib())

    latencies = sorted(latency for latency, _ in results)
    errors = sum(1 for _, status in results if status != 200)

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    row = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "errors": errors,
        "per_second": args.requests / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(0.99),
        "rss": " / ".join(f"{m:.0f}" for m in memory),
    }
    table = markdown_table(
        [row],
        [
            ("requests", "requests"),
            ("concurrency", "concurrent"),
            ("errors", "errors"),
            ("per_second", "requests/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("rss", "memory MiB (before / halfway / after)"),
        ],
    )
    summary = [
        f"{errors} errors in {args.requests} requests; p99 {row['p99_ms']:.0f} ms; memory "
        f"{memory[0]:.0f} -> {memory[-1]:.0f} MiB"
    ]
    print(table + "\n" + "\n".join(summary))
    save_results(
        RESULTS / "load-serve-cpu",
        "Load test: ift serve on the mock backend",
        "Two-node workflow on the mock model (no model time): the server's own cost; loopback, one process.",
        table,
        summary,
        describe_machine(),
        {"row": row},
    )


if __name__ == "__main__":
    main()
