"""Templates declared in workflow and training files (`templates:`), and `ift templates`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ift_engine import TrainError, Workflow, WorkflowError
from ift_engine.plugins import components
from ift_engine.training.examples import collect_examples
from ift_engine.training.trainer import build_spec

POLITE = {
    "name": "polite-zh",
    "task": "politeness",
    "language": "zh",
    "answer": "label",
    "labels": ["礼貌", "不礼貌"],
    "paraphrases": ["这句话礼貌吗？{text}", "{text}\n礼貌还是不礼貌？"],
}


def workflow(templates: list[dict]) -> dict:
    return {
        "name": "polite",
        "inputs": {"text": {}},
        "templates": templates,
        "model": {"name": "m", "backend": "mock", "options": {"answers": {"谢谢": "礼貌"}}},
        "nodes": [
            {"id": "judge", "template": "polite-zh", "paraphrase": 1, "inputs": {"text": "$input.text"}}
        ],
    }


def test_a_workflow_uses_its_own_template():
    wf = Workflow.from_dict(workflow([POLITE]))
    assert wf.run(text="谢谢你")["judge"] == "礼貌"
    assert "polite-zh" not in components().templates  # the plugins' registry is unchanged


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            {**POLITE, "name": "sentiment-zh"},
            "templates[0]: template 'sentiment-zh' is already defined by plugin 'ift_engine.default_plugins.templates'",
        ),
        (
            {**POLITE, "labels": ["礼貌"]},
            "templates[0]: template 'polite-zh': a label answer needs at least two labels",
        ),
        (
            {**POLITE, "paraphrases": ["{text} and {other}"], "variables": ["text"]},
            "placeholder {other} is never provided",
        ),
        ({**POLITE, "paraphrases": ["stray { brace"]}, "template 'polite-zh', paraphrase 0: stray '{'"),
    ],
)
def test_inline_templates_are_checked_like_registered_ones(template, message):
    with pytest.raises(WorkflowError) as caught:
        Workflow.from_dict(workflow([template]))
    assert str(caught.value).startswith("<dict>: templates[0]: ") and message in str(caught.value)


def test_two_inline_templates_of_one_name_name_both():
    with pytest.raises(
        WorkflowError, match=r"templates\[1\]: template 'polite-zh' is already defined by templates\[0\]"
    ):
        Workflow.from_dict(workflow([POLITE, POLITE]))


def test_a_training_file_trains_on_its_own_template():
    spec = build_spec(
        base_model="unused",
        output="unused",
        templates=[POLITE],
        datasets=[
            {
                "template": "polite-zh",
                "records": [{"text": "谢谢", "output": "礼貌"}, {"text": "走开", "output": "不礼貌"}],
            }
        ],
        eval={"split": 0},
    )
    examples, _ = collect_examples(spec, components())
    # Shuffled, then round-robin over the two paraphrases: one record under each.
    assert sorted(e.prompt[-1]["content"] for e in examples) == sorted(
        ["这句话礼貌吗？谢谢", "走开\n礼貌还是不礼貌？"]
    )
    assert {e.template for e in examples} == {"polite-zh"}
    with pytest.raises(TrainError, match="templates\\[0\\]: template 'sentiment-zh' is already defined"):
        collect_examples(
            build_spec(spec.model_dump(), templates=[{**POLITE, "name": "sentiment-zh"}]), components()
        )


def ift(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ift_engine.cli", *args], capture_output=True, text=True)


def test_ift_templates_lists_and_shows_templates():
    listed = ift("templates")
    assert listed.returncode == 0 and "sentiment-zh" in listed.stdout and "outline-en" in listed.stdout
    rows = json.loads(ift("templates", "--json").stdout)
    by_name = {row["name"]: row for row in rows}
    assert by_name["outline-en"]["answer"] == "lines" and by_name["sentiment-en"]["labels"] == [
        "positive",
        "negative",
    ]
    one = ift("templates", "sentiment-zh")
    assert "answer: label (正面, 负面)" in one.stdout and "paraphrase 5" in one.stdout
    shown = json.loads(ift("templates", "sentiment-zh", "--json").stdout)
    assert (
        shown["variables"] == ["text"]
        and len(shown["paraphrases"]) == 6
        and shown["plugin"].endswith("templates")
    )
    unknown = ift("templates", "nope")
    assert unknown.returncode == 2 and "unknown template 'nope' (known:" in unknown.stderr
