"""The runner on the mock backend: data flow, parsing, label scoring, concurrency, failures."""

from __future__ import annotations

import pytest

from ift_engine import MockModel, NodeError, Workflow, WorkflowError
from ift_engine.models.resolve import ModelPool, ModelSpec

MOCK = {"name": "writer", "backend": "mock"}


def article(answers: dict[str, str], **model_options) -> Workflow:
    return Workflow.from_dict(
        {
            "name": "article",
            "inputs": {"topic": {}},
            "model": {**MOCK, "options": {"answers": answers, **model_options}},
            "nodes": [
                {"id": "outline", "template": "outline-en", "inputs": {"topic": "$input.topic"}},
                {
                    "id": "content",
                    "template": "content-en",
                    "inputs": {"topic": "$input.topic", "outline": "outline.output"},
                },
            ],
            "outputs": {"outline": "outline.output", "article": "content.output"},
        }
    )


def test_outputs_flow_downstream_parsed():
    wf = article({"Write an outline": "1. Dance\n2. Smell\n", "Write a short article": "Bees dance."})
    result = wf.run(topic="bees")
    assert result["outline"] == ["Dance", "Smell"]
    assert result["article"] == "Bees dance."
    # The parsed list reached the content prompt as lines, the topic literally.
    content_prompt = result.nodes["content"].prompt[-1]["content"]
    assert "Dance\nSmell" in content_prompt and "about bees" in content_prompt
    assert result.nodes["outline"].raw == "1. Dance\n2. Smell\n"
    assert result.nodes["content"].model == "writer"


def test_run_result_serialises():
    result = article({"": "- a"}).run({"topic": "x"})
    data = result.to_dict()
    assert set(data["nodes"]) == {"outline", "content"}
    assert '"workflow": "article"' in result.to_json()


def test_missing_and_unknown_inputs():
    wf = article({})
    with pytest.raises(WorkflowError, match="missing required input 'topic'"):
        wf.run()
    with pytest.raises(WorkflowError, match="unknown input 'tpoic'"):
        wf.run(topic="x", tpoic="y")


def test_input_types_are_checked():
    wf = Workflow.from_dict(
        {
            "name": "typed",
            "inputs": {"n": {"type": "integer"}, "tags": {"type": "list", "default": []}},
            "model": MOCK,
            "nodes": [
                {
                    "id": "echo",
                    "instruction": "{n} {tags}",
                    "inputs": {"n": "$input.n", "tags": "$input.tags"},
                }
            ],
        }
    )
    assert wf.run(n=3)["echo"] == "3"
    assert wf.run(n=3, tags=["a", "b"])["echo"] == "3 a\nb"
    with pytest.raises(WorkflowError, match="input .n. must be of type integer, not str"):
        wf.run(n="3")


def test_label_node_classifies_through_the_model():
    wf = Workflow.from_dict(
        {
            "name": "sentiment",
            "inputs": {"text": {}},
            "model": {**MOCK, "options": {"answers": {"awful": "negative"}}},
            "nodes": [{"id": "s", "template": "sentiment-en", "inputs": {"text": "$input.text"}}],
        }
    )
    result = wf.run(text="An awful stay")
    assert result["s"] == "negative"
    assert result.nodes["s"].probabilities == {"positive": 0.0, "negative": 1.0}


def test_one_model_object_per_spec():
    wf = article({"": "- a"})
    wf.run(topic="x")
    model = wf.pool.get(ModelSpec(**{**MOCK, "options": {"answers": {"": "- a"}}}))
    assert isinstance(model, MockModel)
    assert [call.method for call in model.calls] == [
        "generate",
        "generate",
    ]  # both nodes, one model


DIAMOND = {
    "name": "diamond",
    "inputs": {"topic": {}},
    "model": {**MOCK, "options": {"default": "- x", "delay": 0.4}},
    "models": {
        "left": {**MOCK, "options": {"default": "left", "delay": 0.4}},
        "right": {**MOCK, "options": {"default": "right", "delay": 0.4}},
    },
    "nodes": [
        {"id": "outline", "template": "outline-en", "inputs": {"topic": "$input.topic"}},
        {"id": "a", "instruction": "A {o}", "inputs": {"o": "outline.output"}, "model": "left"},
        {"id": "b", "instruction": "B {o}", "inputs": {"o": "outline.output"}, "model": "right"},
        {
            "id": "join",
            "instruction": "{a} + {b}",
            "inputs": {"a": "a.output", "b": "b.output"},
            "model": {"name": "echo", "backend": "mock"},
        },
    ],
}


def test_branches_on_different_models_run_at_the_same_time():
    """Each model has its own worker, so two branches on two models overlap (the mock's sleep
    stands for a model call that releases the GIL, as PyTorch and ONNX Runtime kernels do)."""
    result = Workflow.from_dict(DIAMOND).run(topic="bees")
    a, b = result.nodes["a"], result.nodes["b"]
    assert a.started < b.started + b.seconds and b.started < a.started + a.seconds
    assert result.nodes["join"].started >= max(a.started + a.seconds, b.started + b.seconds)
    assert result["join"] == "left + right"  # the echo model returns the rendered prompt


def test_branches_on_one_real_model_share_its_decode_steps(tiny_causal_dir):
    from ift_engine.models.worker import WorkerStats
    from ift_engine.plugins import components

    rows: list[int] = []

    def stats(name: str) -> WorkerStats:
        seen = WorkerStats()
        seen.on_batch = rows.append
        return seen

    model = {"name": str(tiny_causal_dir), "options": {"device": "cpu"}}
    doc = {
        "name": "fork",
        "inputs": {"topic": {}},
        "model": model,
        "generation": {"max_new_tokens": 8},
        "nodes": [
            {"id": "a", "instruction": "Say one thing about {t}", "inputs": {"t": "$input.topic"}},
            {"id": "b", "instruction": "Say another thing about {t}", "inputs": {"t": "$input.topic"}},
        ],
    }
    result = Workflow.from_dict(doc, pool=ModelPool(components(), stats)).run(topic="bees", cache=False)
    assert result["a"] and result["b"]
    assert max(rows) == 2  # the two branches' rows were decoded in the same steps


def test_failing_node_keeps_the_finished_ones():
    doc = {**DIAMOND, "nodes": [*DIAMOND["nodes"][:3], {**DIAMOND["nodes"][3], "parser": "json"}]}
    with pytest.raises(NodeError) as info:
        Workflow.from_dict(doc).run(topic="bees")
    assert "node 'join'" in str(info.value) and "no JSON" in str(info.value)
    partial = info.value.partial
    assert set(partial.nodes) == {"outline", "a", "b"}
    assert partial.error.node == "join" and "no JSON" in partial.error.message
