"""The `ift` command as a user runs it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MOCK_FLOW = """
name: mockflow
inputs:
  topic: {}
model: {name: writer, backend: mock, options: {answers: {"Write an outline": "- Dance\\n- Smell"}, default: "Bees talk."}}
nodes:
  - id: outline
    template: outline-en
    inputs: {topic: $input.topic}
  - id: content
    template: content-en
    inputs: {topic: $input.topic, outline: outline.output}
outputs:
  article: content.output
"""


def ift(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ift_engine.cli", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture
def flow(tmp_path) -> Path:
    path = tmp_path / "mock.yaml"
    path.write_text(MOCK_FLOW)
    return path


def test_run_prints_each_node_and_writes_a_trace(flow, tmp_path):
    trace = tmp_path / "trace.json"
    done = ift("run", str(flow), "--input", "topic=bees", "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    assert "outline" in done.stdout and "- Dance" in done.stdout and "Bees talk." in done.stdout
    data = json.loads(trace.read_text())
    assert data["outputs"] == {"article": "Bees talk."}
    assert data["nodes"]["outline"]["output"] == ["Dance", "Smell"]


def test_run_json_output_and_input_json(flow):
    done = ift("run", str(flow), "--json", "--input-json", '{"topic": "bees"}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"article": "Bees talk."}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "{flow}"], "missing required input 'topic'"),
        (["run", "{flow}", "--input", "topic"], "--input 'topic' must look like NAME=VALUE"),
        (["run", "{flow}", "--input-json", "[1]"], "--input-json must be a JSON object"),
        (["validate", "nowhere.yaml"], "nowhere.yaml: cannot read the workflow or training file"),
        (
            ["run", "{bad}", "--input", "topic=x"],
            "node 'content', field 'inputs.outline': outlin.output refers to unknown node",
        ),
    ],
)
def test_errors_are_one_line_with_exit_code_2(flow, args, message):
    bad = flow.with_name("bad.yaml")
    bad.write_text(MOCK_FLOW.replace("outline: outline.output", "outline: outlin.output"))
    done = ift(*[a.format(flow=flow, bad=bad) for a in args])
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_failing_node_writes_a_partial_trace(flow, tmp_path):
    flow.write_text(
        MOCK_FLOW.replace("    template: content-en\n", "    template: content-en\n    parser: json\n")
    )
    trace = tmp_path / "partial.json"
    done = ift("run", str(flow), "--input", "topic=bees", "--trace", str(trace))
    assert done.returncode == 2 and "node 'content'" in done.stderr and "Traceback" not in done.stderr
    assert "outline" in json.loads(trace.read_text())["nodes"]


def test_validate_graph_and_schema(flow, tmp_path):
    assert "ok (2 nodes, order: outline -> content)" in ift("validate", str(flow)).stdout
    png = tmp_path / "graph.png"
    graph = ift("graph", str(flow), "--png", str(png))
    assert graph.stdout.startswith("flowchart TD") and "n_outline --> n_content" in graph.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    schema = json.loads(ift("schema").stdout)
    assert schema["title"] == "WorkflowSpec"


def test_ift_chat_streams_each_reply_and_keeps_the_conversation(tiny_causal_dir: Path) -> None:
    from ift_engine.models.base import GenerationSettings
    from ift_engine.models.hf_causal import CausalLMOptions, HFCausalLM

    said = "Bees dance.\nWhy?\n/reset\nWhy?\n"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ift_engine.cli",
            "chat",
            str(tiny_causal_dir),
            "--max-tokens",
            "6",
            "--option",
            "device=cpu",
        ],
        input=said,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    model = HFCausalLM.load("tiny", str(tiny_causal_dir), CausalLMOptions(device="cpu"))
    settings = GenerationSettings(max_new_tokens=6)

    def answer(*turns: str) -> str:
        roles = ["user", "assistant"] * len(turns)
        return model.generate([[{"role": r, "content": t} for r, t in zip(roles, turns)]], settings)[0]

    first = answer("Bees dance.")
    expected = [first, answer("Bees dance.", first, "Why?"), answer("Why?")]  # /reset forgets
    assert done.stdout == "".join(f"{text}\n" for text in expected)


def test_ift_chat_refuses_bad_settings_and_options_in_one_line() -> None:
    for args, message in (
        (["--max-tokens", "0"], "--max-tokens: Input should be greater than or equal to 1"),
        (["--option", "device"], "--option 'device' must look like KEY=VALUE"),
    ):
        done = ift("chat", "x", "--backend", "mock", *args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_relative_model_paths_are_read_from_the_workflow_files_folder(tiny_causal_dir: Path, tmp_path):
    """From another folder, `runs/tiny` is the folder beside the file, not a hub id."""
    project = tmp_path / "project"
    (project / "runs").mkdir(parents=True)
    shutil.copytree(tiny_causal_dir, project / "runs" / "tiny")
    (project / "flow.yaml").write_text(
        "name: relative\n"
        "inputs: {topic: {}}\n"
        "model: {name: runs/tiny, options: {device: cpu}}\n"
        "generation: {max_new_tokens: 4}\n"
        "nodes:\n"
        "  - id: outline\n"
        "    template: outline-en\n"
        "    inputs: {topic: $input.topic}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checked = ift("validate", str(project / "flow.yaml"), cwd=elsewhere)
    assert checked.returncode == 0, checked.stderr
    assert f"model {(project / 'runs' / 'tiny').resolve()}: a folder" in checked.stdout
    done = ift("run", str(project / "flow.yaml"), "--input", "topic=bees", "--json", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["outline"]) == 1
