"""Hostile command lines, files and streams through real `ift` processes: each ends in one line
naming what is wrong and what to do, exit 2, and within a bound of time, never a hang or a
traceback (issue 19: unbounded reads, checks that came late, internal errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

IFT = [sys.executable, "-m", "ift_engine.cli"]
FLOW = {
    "name": "t",
    "inputs": {"topic": "string"},
    "model": {"name": "m", "backend": "mock"},
    "nodes": [{"id": "a", "instruction": "Say {topic}", "inputs": {"topic": "$input.topic"}}],
}


def ift(*args: str, timeout: float = 120, **run: Any) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a real `ift` process."""
    run.setdefault("stdin", subprocess.DEVNULL)
    env = {**os.environ, "IFT_ENGINE_LOAD_PLUGINS": "", **run.pop("env", {})}
    done = subprocess.run([*IFT, *args], capture_output=True, timeout=timeout, env=env, **run)
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


def assert_one_line_error(code: int, stderr: str, *expected: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    for text in expected:
        assert text in " ".join(stderr.split()), stderr


def write_flow(folder: Path, **changes: Any) -> Path:
    path = folder / "flow.json"
    path.write_text(json.dumps({**FLOW, **changes}))
    return path


def training_file(folder: Path, **changes: Any) -> Path:
    path = folder / "train.json"
    doc = {"base_model": str(folder / "base"), "output": str(folder / "out"), "datasets": [{"records": [{"instruction": "a", "output": "b"}]}]}
    path.write_text(json.dumps({**doc, **changes}))
    return path


# -- where a file is meant: never a device, a FIFO or a pipe ------------------------------------------


def not_regular_files(folder: Path) -> dict[str, Path]:
    fifo = folder / "no-writer.fifo"
    os.mkfifo(fifo)  # nobody ever writes: opening it must not wait
    link = folder / "link-to-zero.yaml"
    link.symlink_to("/dev/zero")
    return {"device": Path("/dev/zero"), "fifo": fifo, "link to a device": link}


def test_a_device_fifo_or_link_to_one_is_refused_where_a_file_is_meant(tmp_path: Path) -> None:
    for case, path in not_regular_files(tmp_path).items():
        started = time.perf_counter()
        for command in (["validate", str(path)], ["run", str(path), "--input", "topic=x"], ["train", str(path)]):
            code, _, stderr = ift(*command, timeout=60)
            assert_one_line_error(code, stderr, f"{path}:", "is not a regular file", "give a file")
        assert time.perf_counter() - started < 60, case


def test_a_dataset_that_is_a_device_or_fifo_is_refused(tmp_path: Path) -> None:
    for case, path in not_regular_files(tmp_path).items():
        dataset = tmp_path / f"data-{len(case)}.jsonl"
        dataset.symlink_to(path)
        config = training_file(tmp_path, datasets=[{"path": str(dataset)}])
        code, _, stderr = ift("validate", str(config), timeout=60)
        assert_one_line_error(code, stderr, f"{dataset}: the dataset is not a regular file")


def test_a_file_past_the_size_bound_is_refused_having_read_no_more(tmp_path: Path) -> None:
    from ift_engine.documents import read_bytes
    from ift_engine.errors import WorkflowError

    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * 101)
    with pytest.raises(WorkflowError, match="big.yaml: the workflow file is larger than 100 bytes"):
        read_bytes(path, "workflow file", WorkflowError, limit=100)
    assert read_bytes(path, "workflow file", WorkflowError, limit=101) == b"#" * 101


def test_a_cache_entry_replaced_by_a_fifo_or_device_is_a_miss_without_waiting(tmp_path: Path) -> None:
    from ift_engine.workflow.cache import AnswerCache

    cache = AnswerCache(tmp_path)
    answer = {"raw": "x", "label": None, "probabilities": None}
    for replace in (lambda p: os.mkfifo(p), lambda p: p.symlink_to("/dev/zero")):
        key = AnswerCache.key(case=str(replace))
        cache.put(key, answer)
        entry = cache._path(key)
        entry.unlink()
        replace(entry)
        got: list[Any] = []
        reader = threading.Thread(target=lambda k=key, g=got: g.append(cache.get(k)), daemon=True)
        reader.start()
        reader.join(10)
        assert got == [None]


def test_inputs_without_line_breaks_stop_the_run(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    code, _, stderr = ift("run", str(write_flow(tmp_path)), "--inputs", "/dev/zero", "--output", str(output))
    assert_one_line_error(code, stderr, "an input line runs past 256 MiB without a line break")


# -- workflow size ---------------------------------------------------------------------------------


def chained_nodes(count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"n{i}", "instruction": "Say {x}", "inputs": {"x": f"n{i - 1}.output" if i else "$input.topic"}}
        for i in range(count)
    ]


def test_a_workflow_of_more_nodes_than_the_bound_fails_fast(tmp_path: Path) -> None:
    from ift_engine.workflow.spec import MAX_NODES

    path = write_flow(tmp_path, nodes=chained_nodes(MAX_NODES + 1))
    started = time.perf_counter()
    code, _, stderr = ift("validate", str(path))
    assert_one_line_error(code, stderr, f"nodes: Value error, {MAX_NODES + 1:,} nodes; a workflow has at most {MAX_NODES:,}")
    assert time.perf_counter() - started < 30
    code, stdout, stderr = ift("validate", str(write_flow(tmp_path, nodes=chained_nodes(MAX_NODES))))
    assert code == 0 and f"ok ({MAX_NODES} nodes" in stdout, stderr


def test_a_huge_yaml_document_fails_before_it_is_built(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    nodes = "".join(f"- id: n{i}\n  instruction: Say {{x}}\n  inputs: {{x: $input.topic}}\n" for i in range(300_000))
    path.write_text(f"name: t\ninputs: {{topic: string}}\nmodel: {{name: m, backend: mock}}\nnodes:\n{nodes}")
    started = time.perf_counter()
    code, _, stderr = ift("validate", str(path))
    assert_one_line_error(code, stderr, "the document holds more than 1,000,000 values")
    assert time.perf_counter() - started < 30  # building it took over a minute


# -- Ray --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "cannot reach Ray at 127.0.0.1:1 within 10 s"),
        (["--executor", "ray", "--ray-address", "nowhere"], "give HOST:PORT of the cluster's head"),
        (["--executor", "ray", "--workers", "-1"], "--workers must be at least 1, not -1"),
        (["--workers", "0"], "--workers and --ray-address belong to --executor ray"),
        (["--ray-address", "127.0.0.1:1"], "--workers and --ray-address belong to --executor ray"),
    ],
)
def test_ray_flags_are_checked_when_the_command_starts(tmp_path: Path, flags: list[str], expected: str) -> None:
    pytest.importorskip("ray")
    inputs, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inputs.write_text('{"topic": "x"}\n')
    started = time.perf_counter()
    code, _, stderr = ift("run", str(write_flow(tmp_path)), "--inputs", str(inputs), "--output", str(output), *flags)
    assert_one_line_error(code, stderr, expected)
    assert time.perf_counter() - started < 60 and not output.exists()


def test_an_address_that_does_not_answer_fails_within_the_bound() -> None:
    import socket

    from ift_engine.errors import WorkflowError
    from ift_engine.workflow.ray_executor import check_reachable

    with socket.socket() as server, socket.socket() as first:
        server.bind(("127.0.0.1", 0))
        server.listen(0)  # one connection waits in the queue; later ones get no answer
        address = f"127.0.0.1:{server.getsockname()[1]}"
        first.connect(server.getsockname())
        started = time.perf_counter()
        with pytest.raises(WorkflowError, match=f"cannot reach Ray at {address} within 0.5 s \\(no answer\\)"):
            check_reachable(address, timeout=0.5)
        assert time.perf_counter() - started < 5
