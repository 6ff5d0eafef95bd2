"""Load-time validation: every error names the file, node and field, and what to do."""

from __future__ import annotations

import json

import pytest
import yaml

from ift_engine import NodeSpec, Workflow, WorkflowError, WorkflowSpec

BASE = {
    "name": "demo",
    "inputs": {"topic": {"description": "subject"}},
    "model": {"name": "mock", "backend": "mock"},
    "nodes": [
        {"id": "outline", "template": "outline-en", "inputs": {"topic": "$input.topic"}},
        {
            "id": "content",
            "template": "content-en",
            "inputs": {"topic": "$input.topic", "outline": "outline.output"},
        },
    ],
}


def load(doc: dict) -> Workflow:
    return Workflow.from_yaml_text(yaml.safe_dump(doc, sort_keys=False), source="flow.yaml")


def with_node(index: int, **changes) -> dict:
    doc = json.loads(json.dumps(BASE))
    doc["nodes"][index].update(changes)
    return doc


def test_valid_workflow_builds_a_dag():
    wf = load(BASE)
    assert list(wf.graph.graph.edges) == [("outline", "content")]
    assert wf.graph.order() == ["outline", "content"]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            with_node(1, inputs={"topic": "$input.topic", "outline": "nope.output"}),
            "flow.yaml: node 'content', field 'inputs.outline': nope.output refers to unknown node 'nope'",
        ),
        (
            with_node(0, inputs={"topic": "$input.subject"}),
            "node 'outline', field 'inputs.topic': $input.subject is not a declared workflow input (declared: topic)",
        ),
        (
            with_node(0, template="no-such"),
            "node 'outline', field 'template': unknown template 'no-such' (known: content-en,",
        ),
        (
            with_node(0, parser="yaml"),
            "node 'outline', field 'parser': unknown parser 'yaml' (known: json, label, lines, text",
        ),
        (
            with_node(0, model={"name": "x", "backend": "tensorflow"}),
            "node 'outline', field 'model': unknown model backend 'tensorflow' (known: hf-causal, hf-classifier,",
        ),
        (
            with_node(0, model="./missing-folder"),
            "node 'outline', field 'model': model './missing-folder' not found",
        ),
        (
            with_node(0, model={"name": "m", "backend": "mock", "options": {"answerz": {}}}),
            "node 'outline', field 'model': model 'm' (mock) option 'answerz': Extra inputs are not permitted",
        ),
        (
            with_node(0, inputs={}),
            "node 'outline', field 'inputs': template 'outline-en' needs input 'topic'; add it under inputs",
        ),
        (
            with_node(0, inputs={"topic": "$input.topic", "tone": "dry"}),
            "node 'outline', field 'inputs': input 'tone' is not used by template 'outline-en'",
        ),
        (with_node(1, id="outline"), "flow.yaml: duplicate node id 'outline'"),
        (
            with_node(0, generation={"max_new_tokens": "many"}),
            "flow.yaml: nodes[0] (id 'outline').generation.max_new_tokens: Input should be a valid integer",
        ),
        (
            with_node(0, temperature=0.5),
            "flow.yaml: nodes[0] (id 'outline').temperature: unknown field (known: id, template, instruction,",
        ),
        (
            with_node(0, instruction="Hi {topic}"),
            "flow.yaml: nodes[0] (id 'outline'): Value error, give exactly one of 'template' or 'instruction'",
        ),
        (
            {**BASE, "outputs": {"article": "content"}},
            "flow.yaml: output 'article' must be NODE.output for a known node, not 'content'",
        ),
        (
            {k: v for k, v in BASE.items() if k != "model"},
            "node 'outline', field 'model': no model: set 'model' on the node or on the workflow",
        ),
    ],
)
def test_errors_name_file_node_and_field(doc, expected):
    with pytest.raises(WorkflowError) as info:
        load(doc)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_cycle_is_named():
    doc = with_node(
        0,
        template=None,
        instruction="Plan {topic} after {draft}",
        inputs={"topic": "$input.topic", "draft": "content.output"},
    )
    with pytest.raises(
        WorkflowError, match=r"cycle: (outline -> content -> outline|content -> outline -> content)"
    ):
        load(doc)


def test_bad_yaml_reports_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nnodes:\n  - id: a\n   template: [\n")
    with pytest.raises(WorkflowError, match=r"broken.yaml: invalid YAML at line \d+"):
        Workflow.from_yaml(path)


def test_missing_file():
    with pytest.raises(WorkflowError, match="nowhere.yaml: cannot read the workflow file"):
        Workflow.from_yaml("nowhere.yaml")


def test_yaml_round_trip():
    wf = load(BASE)
    again = Workflow.from_yaml_text(wf.to_yaml())
    assert again.spec == wf.spec
    assert again.to_yaml() == wf.to_yaml()


def test_an_input_whose_default_is_null_stays_optional_after_a_round_trip():
    doc = {
        "name": "x",
        "inputs": {"note": {"default": None}},
        "model": {"name": "m", "backend": "mock"},
        "nodes": [{"id": "n", "instruction": "say {note}", "inputs": {"note": "$input.note"}}],
    }
    first = Workflow.from_dict(doc)
    again = Workflow.from_dict(first.to_dict())  # what Ray ships to its workers
    assert not again.spec.inputs["note"].required
    assert again.run(cache=False)["n"] == first.run(cache=False)["n"]


def test_build_in_code_matches_yaml():
    spec = WorkflowSpec(
        name="demo",
        inputs={"topic": {"description": "subject"}},
        model={"name": "mock", "backend": "mock"},
        nodes=[
            NodeSpec(id="outline", template="outline-en", inputs={"topic": "$input.topic"}),
            NodeSpec(
                id="content",
                template="content-en",
                inputs={"topic": "$input.topic", "outline": "outline.output"},
            ),
        ],
    )
    assert Workflow(spec).to_yaml() == load(BASE).to_yaml()


def test_json_schema_describes_nodes():
    schema = WorkflowSpec.model_json_schema()
    assert "nodes" in schema["required"]
    assert schema["additionalProperties"] is False


def test_mermaid_lists_inputs_nodes_and_edges():
    text = load(BASE).mermaid()
    assert text.startswith("flowchart TD")
    assert "in_topic --> n_outline" in text and "n_outline --> n_content" in text


def test_shipped_workflows_validate():
    from pathlib import Path

    paths = sorted(Path(__file__).parent.parent.joinpath("workflows").glob("*.yaml"))
    assert len(paths) >= 8, paths  # the glob found the shipped workflows
    for path in paths:
        Workflow.from_yaml(path)


def test_a_typo_in_a_spec_built_in_python_is_the_engines_error_with_the_near_match():
    with pytest.raises(
        WorkflowError,
        match=r"NodeSpec: generation\.max_tokens: unknown field \(did you mean 'max_new_tokens'\?",
    ):
        NodeSpec(id="a", instruction="x", generation={"max_tokens": 3})
    with pytest.raises(WorkflowError, match=r"WorkflowSpec: nodse: unknown field \(did you mean 'nodes'\?"):
        WorkflowSpec(name="x", model="m", nodes=[NodeSpec(id="a", instruction="x")], nodse=[])
