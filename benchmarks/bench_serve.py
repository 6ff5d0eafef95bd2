"""What batching across requests buys a served workflow: N clients at once against the same N
requests one at a time, on ``ift serve`` (uvicorn on loopback) with the embedded
SmolLM2-135M-Instruct and workflows/summarize.yaml (two nodes, 60 and 16 new tokens).

    python benchmarks/bench_serve.py [--clients 16] [--rounds 2] [--max-wait-ms 50]

Greedy decoding, answer cache off. The two ways alternate round by round in one run, so machine
drift hits both alike. Prints a table and writes benchmarks/results/serve-<cpu|gpu>.{json,md}:
throughput, p50/p95 latency, failures, and how many concurrent answers equal the sequential ones.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from machine import describe_machine, markdown_table, save_results

from ift_engine.serve import ServeConfig, create_app
from ift_engine.serve.live import serving
from ift_engine.workflow import Workflow

SUMMARIZE = Path(__file__).parent.parent / "workflows" / "summarize.yaml"
RESULTS = Path(__file__).parent / "results"
TEXTS = [
    "Honeybees tell each other where flowers are by dancing: the angle of the waggle run gives the direction and its length the distance.",
    "The sky looks blue because air molecules scatter short blue wavelengths of sunlight much more than long red ones.",
    "Early bicycles had no pedals; riders pushed along the ground with their feet until cranks were added in the 1860s.",
    "Vaccines show the immune system a harmless piece of a germ, so it can build antibodies and memory cells before a real infection.",
    "Tomatoes grow well on a sunny balcony in large pots, with daily watering in summer and a stake to hold the stems.",
    "Adults sleep best with a regular bedtime, a dark cool room, and no screens or caffeine in the hours before bed.",
    "A refrigerator pumps heat out of its cabinet: a refrigerant evaporates inside, absorbing heat, and condenses outside, releasing it.",
    "Water evaporates from seas and lakes, condenses into clouds, falls as rain or snow, and flows back through rivers and ground.",
    "Adults can learn a second language well by speaking every day, reading things they enjoy, and not fearing mistakes.",
    "Bridges carry heavy loads by spreading forces: arches push outward, suspension cables pull, and beams bend a little.",
    "Cats purr by twitching their larynx muscles many times a second, both when content and sometimes when hurt or stressed.",
    "Compound interest pays interest on earlier interest, so savings grow faster the longer they are left untouched.",
    "Volcanoes form where molten rock rises through cracks in the crust, often at the edges of tectonic plates.",
    "A clear email states its purpose in the first line, keeps to one topic, and ends with the action it asks for.",
    "In winter a honeybee colony clusters tightly and shivers its flight muscles to keep the queen warm until spring.",
    "Solar panels turn sunlight into electricity when light frees electrons in silicon cells, driving a current through a circuit.",
]


async def timed(http: httpx.AsyncClient, text: str) -> tuple[float, dict[str, Any] | None]:
    started = time.perf_counter()
    response = await http.post("/v1/workflows/summarize/run", json={"inputs": {"text": text}})
    body = response.json() if response.status_code == 200 else None
    return time.perf_counter() - started, body["outputs"] if body else None


async def concurrently(url: str, texts: list[str]) -> list[tuple[float, dict[str, Any] | None]]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        return list(await asyncio.gather(*(timed(http, t) for t in texts)))


async def one_at_a_time(url: str, texts: list[str]) -> list[tuple[float, dict[str, Any] | None]]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        return [await timed(http, t) for t in texts]


def summary_row(way: str, runs: list[tuple[float, list[tuple[float, Any]]]]) -> dict[str, Any]:
    latencies = sorted(latency for _, results in runs for latency, _ in results)
    requests = sum(len(results) for _, results in runs)
    wall = sum(seconds for seconds, _ in runs)
    return {
        "way": way,
        "requests": requests,
        "failed": sum(1 for _, results in runs for _, out in results if out is None),
        "seconds": wall,
        "throughput": requests / wall,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-wait-ms", type=float, default=50)
    args = parser.parse_args()
    texts = (TEXTS * (args.clients // len(TEXTS) + 1))[: args.clients]
    config = ServeConfig(cache=False, max_batch=args.clients, max_wait_ms=args.max_wait_ms)
    # The backend's batch_size option caps prompts per forward pass (default 8): let a batch through.
    doc = Workflow.from_yaml(SUMMARIZE).to_dict()
    doc["model"] = {"name": doc["model"], "options": {"batch_size": args.clients}}
    workflow = Workflow.from_dict(doc, source=str(SUMMARIZE))
    runs: dict[str, list[tuple[float, list[tuple[float, Any]]]]] = {"one at a time": [], "concurrent": []}
    with serving(create_app(config, {workflow.spec.name: workflow})) as url:
        asyncio.run(one_at_a_time(url, texts[:1]))  # loads the model before any clock starts
        for round_ in range(args.rounds):
            for way, client in (("one at a time", one_at_a_time), ("concurrent", concurrently)):
                started = time.perf_counter()
                results = asyncio.run(client(url, texts))
                runs[way].append((time.perf_counter() - started, results))
                print(f"round {round_ + 1}: {way}: {runs[way][-1][0]:.1f} s", file=sys.stderr)
    rows = [summary_row(way, data) for way, data in runs.items()]
    ratio = rows[1]["throughput"] / rows[0]["throughput"]
    same = sum(
        a[1] == b[1]
        for (_, seq), (_, con) in zip(runs["one at a time"], runs["concurrent"])
        for a, b in zip(seq, con)
    )
    table = markdown_table(
        rows,
        [
            ("way", "way"),
            ("requests", "requests"),
            ("failed", "failed"),
            ("seconds", "seconds"),
            ("throughput", "requests/s"),
            ("p50", "p50 latency s"),
            ("p95", "p95 latency s"),
        ],
    )
    machine = describe_machine()
    summary = [
        f"{args.clients} concurrent clients: {ratio:.2f}x the throughput of the same requests one at a time "
        f"(target 4x), {rows[1]['failed'] + rows[0]['failed']} failed",
        f"{same} of {rows[1]['requests']} concurrent answers equal the one-at-a-time answers (greedy)",
    ]
    print(table)
    print("\n".join(summary))
    save_results(
        RESULTS / f"serve-{'gpu' if machine['gpu'] else 'cpu'}",
        "Batching across requests: ift serve",
        f"summarize.yaml on SmolLM2-135M-Instruct (greedy, cache off, model batch_size {args.clients}), "
        f"{args.clients} requests per round, "
        f"{args.rounds} rounds alternating, max wait {args.max_wait_ms:g} ms, loopback.",
        table,
        summary,
        machine,
        {"rows": rows, "ratio": ratio, "same_answers": same},
    )


if __name__ == "__main__":
    main()
