"""Batch runs: node-level batching, map/join, cache, retries, timeouts, failure isolation,
resumable output files (with a real SIGKILL) and the Ray executor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ift_engine import MockModel
from ift_engine.workflow import Workflow
from ift_engine.workflow.rows import RowFile, completed_ids

TOPICS = [f"topic {i}" for i in range(6)]


def mock_spec(**options: Any) -> dict[str, Any]:
    return {"name": "mock", "backend": "mock", "options": options}


def two_step(model: Any, **node_options: Any) -> Workflow:
    """outline -> content, like workflows/article.yaml, on any model."""
    return Workflow.from_dict(
        {
            "name": "two-step",
            "inputs": {"topic": "string"},
            "model": model,
            "generation": {"max_new_tokens": 6},
            "nodes": [
                {"id": "outline", "instruction": "Outline {topic}", "inputs": {"topic": "$input.topic"}},
                {
                    "id": "content",
                    "instruction": "Write {topic} from:\n{outline}",
                    "inputs": {"topic": "$input.topic", "outline": "outline.output"},
                    **node_options,
                },
            ],
        }
    )


def mock_of(wf: Workflow) -> MockModel:
    model = wf.pool.get(wf.graph.node("outline").model)
    assert isinstance(model, MockModel)
    return model


# -- batching ----------------------------------------------------------------------------------


def test_batched_equals_one_at_a_time_on_a_real_model(tiny_causal_dir: Path) -> None:
    wf = two_step(str(tiny_causal_dir))
    single = [wf.run(topic=t, cache=False).outputs for t in TOPICS]
    batched = {
        r.id: r.outputs for r in wf.run_many([{"topic": t} for t in TOPICS], batch_size=4, cache=False)
    }
    assert [batched[i + 1] for i in range(len(TOPICS))] == single
    assert all(o["content"] for o in single)


def test_each_node_sends_the_whole_batch_in_one_call() -> None:
    wf = two_step(mock_spec(default="- a"))
    results = list(wf.run_many([{"topic": t} for t in TOPICS], batch_size=4))
    assert [r.id for r in results] == [1, 2, 3, 4, 5, 6] and all(r.ok for r in results)
    sizes = [(call.prompts[0].split()[0], len(call.prompts)) for call in mock_of(wf).calls]
    assert sizes == [("Outline", 4), ("Write", 4), ("Outline", 2), ("Write", 2)]


def test_records_keep_their_own_ids_and_bad_inputs_fail_alone() -> None:
    wf = two_step(mock_spec(default="x"))
    rows = [r.row() for r in wf.run_many([{"id": "a", "topic": "t"}, {"id": "b"}, {"id": "c", "topic": 3}])]
    by_id = {row["id"]: row for row in rows}
    assert by_id["a"]["error"] is None and by_id["a"]["outputs"]["content"]
    assert by_id["b"]["error"] == {"node": None, "message": by_id["b"]["error"]["message"]}
    assert "missing required input 'topic'" in by_id["b"]["error"]["message"]
    assert "must be of type string" in by_id["c"]["error"]["message"]


# -- map / join --------------------------------------------------------------------------------

MAP_DOC = {
    "name": "sections",
    "inputs": {"topic": "string"},
    "model": mock_spec(answers={"Outline": "- Intro\n- Body\n- End"}),
    "nodes": [
        {
            "id": "outline",
            "instruction": "Outline {topic}",
            "answer": "lines",
            "inputs": {"topic": "$input.topic"},
        },
        {
            "id": "section",
            "instruction": "Write about {section} ({topic})",
            "inputs": {"section": "outline.output", "topic": "$input.topic"},
            "map": "section",
        },
        {"id": "join", "instruction": "Join:\n{parts}", "inputs": {"parts": "section.output"}},
    ],
}


def test_map_runs_every_element_batched_and_the_join_gets_them_in_order() -> None:
    wf = Workflow.from_dict(MAP_DOC)
    results = list(wf.run_many([{"topic": "bees"}, {"topic": "ants"}], batch_size=2))
    for result, topic in zip(results, ["bees", "ants"]):
        assert result.nodes["section"].output == [
            f"Write about {s} ({topic})" for s in ("Intro", "Body", "End")
        ]
        assert [i.prompt[-1]["content"] for i in result.nodes["section"].items] == result.nodes[
            "section"
        ].output
        assert result["join"] == "Join:\n" + "\n".join(result.nodes["section"].output)
    section_calls = [c for c in mock_of(wf).calls if c.prompts[0].startswith("Write")]
    assert len(section_calls) == 1 and len(section_calls[0].prompts) == 6  # 2 items x 3 sections


def test_map_over_an_empty_list_and_over_a_non_list() -> None:
    def with_section(value: Any) -> Workflow:
        section = {**MAP_DOC["nodes"][1], "inputs": {"section": value, "topic": "$input.topic"}}
        return Workflow.from_dict({**MAP_DOC, "nodes": [MAP_DOC["nodes"][0], section]})

    assert with_section([]).run(topic="bees")["section"] == []
    # A JSON answer without a schema says nothing of its type: a map over it is checked as it runs.
    outline = {**MAP_DOC["nodes"][0], "answer": "json"}
    doc = {
        **MAP_DOC,
        "model": mock_spec(answers={"Outline": '{"intro": 1}'}),
        "nodes": [outline, MAP_DOC["nodes"][1]],
    }
    [result] = Workflow.from_dict(doc).run_many([{"topic": "bees"}])
    assert (
        result.error.node == "section"
        and "input 'section' must be of type list, not dict" in result.error.message
    )


def test_map_must_name_one_of_the_node_inputs() -> None:
    from ift_engine import WorkflowError

    doc = {**MAP_DOC, "nodes": [MAP_DOC["nodes"][0], {**MAP_DOC["nodes"][1], "map": "sections"}]}
    with pytest.raises(WorkflowError, match=r"nodes\[1\].*map: 'sections' is not one of this node's inputs"):
        Workflow.from_dict(doc, source="w.yaml")


# -- cache ---------------------------------------------------------------------------------------


def test_cache_hits_and_invalidation(tiny_causal_dir: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_causal_dir, folder)
    first = two_step(str(folder)).run(topic="bees")
    assert not any(n.cached for n in first.nodes.values())
    again = two_step(str(folder)).run(topic="bees")
    assert all(n.cached for n in again.nodes.values()) and again.outputs == first.outputs
    assert not any(n.cached for n in two_step(str(folder)).run(topic="bees", cache=False).nodes.values())

    changed = two_step(str(folder), instruction="Now write {topic} from:\n{outline}")
    nodes = changed.run(topic="bees").nodes
    assert nodes["outline"].cached and not nodes["content"].cached  # the template changed

    config = folder / "config.json"
    config.write_text(config.read_text())  # same bytes, new file: the model may have changed
    assert not any(n.cached for n in two_step(str(folder)).run(topic="bees").nodes.values())


def test_sampling_without_a_seed_is_not_cached(tiny_causal_dir: Path) -> None:
    def run(**generation: Any) -> bool:
        wf = two_step(str(tiny_causal_dir), generation={"temperature": 0.8, **generation})
        wf.run(topic="bees")
        return wf.run(topic="bees").nodes["content"].cached

    assert run() is False
    assert run(seed=3) is True


# -- retries, timeouts, failure isolation ---------------------------------------------------------


def test_retry_until_the_model_answers() -> None:
    flaky = mock_spec(default="ok", fail_first=2)
    result = two_step(flaky, retry={"attempts": 1}).run_many([{"topic": "t"}])
    assert "fails (fail_first=2)" in next(result).error.message  # the outline node: no retries there

    doc = two_step(mock_spec(default="ok", fail_first=2, delay=0.001)).to_dict()  # a fresh mock
    for node in doc["nodes"]:
        node["retry"] = {"attempts": 3, "backoff": 0.01}
    wf = Workflow.from_dict(doc)
    assert wf.run(topic="t")["content"] == "ok"
    assert len(mock_of(wf).calls) == 4  # outline: 2 failures + 1 success; content: 1


def test_timeout_fails_the_item_with_a_clear_message() -> None:
    wf = two_step(mock_spec(default="ok", delay=1.0), timeout=0.1)
    started = time.perf_counter()
    [result] = wf.run_many([{"topic": "t"}], cache=False)
    assert result.error.node == "content" and "timeout of 0.1 s" in result.error.message
    assert time.perf_counter() - started < 2.5  # outline (1 s) + the timeout, not outline + content


def test_one_failing_item_does_not_fail_its_batch() -> None:
    wf = two_step(mock_spec(default="fine", errors={"poison": "the model refuses this prompt"}))
    rows = {r.id: r for r in wf.run_many([{"topic": "a"}, {"topic": "poison"}, {"topic": "c"}], batch_size=3)}
    assert rows[1].ok and rows[3].ok
    assert rows[2].error.node == "outline" and rows[2].error.message == "the model refuses this prompt"
    content_calls = [c for c in mock_of(wf).calls if c.prompts[0].startswith("Write")]
    assert [len(c.prompts) for c in content_calls] == [2]  # the failed item is not sent on


# -- files, resume after kill -9 ----------------------------------------------------------------


def ift(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ift_engine.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "IFT_ENGINE_LOAD_PLUGINS": ""},
    )


def write_workflow(folder: Path, delay: float = 0.0) -> Path:
    wf = two_step(mock_spec(default="- a", delay=delay))
    path = folder / "wf.yaml"
    path.write_text(wf.to_yaml())
    return path


def output_ids(path: Path) -> list[Any]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_resume_after_sigkill_writes_every_id_exactly_once(tmp_path: Path) -> None:
    workflow = write_workflow(tmp_path, delay=0.15)
    inputs, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inputs.write_text("".join(json.dumps({"id": f"r{i}", "topic": f"t{i}"}) + "\n" for i in range(40)))
    args = [
        str(workflow),
        "--inputs",
        str(inputs),
        "--output",
        str(output),
        "--batch-size",
        "2",
        "--no-cache",
    ]
    process = ift("run", *args)
    deadline = time.time() + 60
    while time.time() < deadline and (not output.exists() or len(output.read_text().splitlines()) < 4):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = output_ids(output)
    assert 4 <= len(written) < 40 and len(set(written)) == len(written)

    resumed = ift("run", *args, "--resume")
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert f"{len(written)} skipped" in stderr
    final = output_ids(output)
    assert sorted(final) == sorted(f"r{i}" for i in range(40))  # each id exactly once
    assert final[: len(written)] == written


def test_a_row_cut_short_is_discarded_on_resume(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text('{"id": 1, "outputs": {}, "error": null}\n{"id": 2, "outp')
    assert completed_ids(output) == {"1"}
    rows = RowFile(output, resume=True)
    rows.close()
    assert rows.done == {"1"} and output.read_text() == '{"id": 1, "outputs": {}, "error": null}\n'


def test_malformed_lines_are_reported_by_number_and_the_rest_run(tmp_path: Path) -> None:
    workflow = write_workflow(tmp_path)
    inputs, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inputs.write_text(
        '{"topic": "a"}\nnot json\n\n[1, 2]\n{"id": 1, "topic": "dup"}\n{"other": 1}\n{"topic": "b"}\n'
    )
    process = ift("run", str(workflow), "--inputs", str(inputs), "--output", str(output))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "line 2: not valid JSON" in stderr
    assert "line 4: must be a JSON object of inputs, not list" in stderr
    assert "line 5: duplicate id 1" in stderr
    assert "Traceback" not in stderr
    rows = {row["id"]: row for row in map(json.loads, output.read_text().splitlines())}
    assert set(rows) == {1, 6, 7}
    assert rows[1]["error"] is None and rows[7]["error"] is None
    assert "unknown input 'other'" in rows[6]["error"]["message"]
    assert "2 succeeded, 1 failed" in stderr and "3 bad input lines" in stderr


def test_batch_cli_refuses_to_overwrite_and_needs_an_output(tmp_path: Path) -> None:
    workflow = write_workflow(tmp_path)
    inputs, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inputs.write_text('{"topic": "a"}\n')
    output.write_text('{"id": 1}\n')
    process = ift("run", str(workflow), "--inputs", str(inputs), "--output", str(output))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2 and "the output file exists; pass --resume" in stderr
    assert "Traceback" not in stderr and output.read_text() == '{"id": 1}\n'
    process = ift("run", str(workflow), "--inputs", str(inputs))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2 and "--inputs needs --output" in stderr


# -- Ray -------------------------------------------------------------------------------------------


def test_ray_executor_equals_the_local_one(tiny_causal_dir: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    wf = two_step(str(tiny_causal_dir))
    records = [{"id": i, "topic": t} for i, t in enumerate(TOPICS)]
    local = {r.id: r.outputs for r in wf.run_many(records, batch_size=2, cache=False)}
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"Ray cannot start here: {exc}")
    try:
        executor = wf.executor("ray", cache=False, workers=2)
        remote = {r.id: r.outputs for r in wf.run_many(records, batch_size=2, executor=executor)}
        report = wf.run_file(
            _jsonl(tmp_path / "in.jsonl", records), tmp_path / "out.jsonl", executor=executor
        )
    finally:
        ray.shutdown()
    assert remote == local
    assert report.done == len(records) and report.ok
    rows = {
        row["id"]: row["outputs"]
        for row in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())
    }
    assert rows == local


def _jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_pool_is_shared_so_models_load_once() -> None:
    wf = two_step(mock_spec(default="x"))
    list(wf.run_many([{"topic": "a"}]))
    list(wf.run_many([{"topic": "b"}]))
    # One mock object answered both runs (a reload would start a fresh one with no calls).
    assert [call.prompts[0] for call in mock_of(wf).calls] == [
        "Outline a",
        "Write a from:\nx",
        "Outline b",
        "Write b from:\nx",
    ]


def test_run_file_refuses_an_output_that_is_its_inputs(tmp_path: Path) -> None:
    from ift_engine.errors import IftError

    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"topic": "bees"}\n')
    (tmp_path / "link.jsonl").symlink_to(inputs)
    wf = two_step(mock_spec(default="ok"))
    with pytest.raises(IftError, match="the output is the inputs file"):
        wf.run_file(inputs, tmp_path / "link.jsonl", resume=True)
    assert inputs.read_text() == '{"topic": "bees"}\n'


def test_run_many_hands_each_item_to_a_callback_and_shows_progress(capsys) -> None:
    wf = two_step(mock_spec(default="ok", errors={"Outline b": "no b"}))
    seen: list[Any] = []
    records = [{"id": i, "topic": t} for i, t in enumerate("abc")]
    results = list(wf.run_many(records, batch_size=2, cache=False, on_item_done=seen.append, progress=True))
    assert [r.id for r in seen] == [r.id for r in results] and len(results) == 3
    assert sum(r.error is not None for r in results) == 1
    bar = capsys.readouterr().err
    assert "3/3" in bar and "failed=1" in bar
