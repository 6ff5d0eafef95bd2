"""Ensembles against their definitions: sklearn's VotingClassifier for voting, the single model
for token averaging of identical members, and load-time validation naming the node."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import VotingClassifier

from ift_engine import GenerationSettings, MockModel, ModelError, Workflow, WorkflowError
from ift_engine.ensemble import HardVote, LogitMean, SoftVote, TokenAverage
from ift_engine.models.hf_causal import CausalLMOptions, HFCausalLM


class Fixed(ClassifierMixin, BaseEstimator):
    """An sklearn classifier whose predict_proba for sample i is row i of ``table``."""

    def __init__(self, table=None):
        self.table = table

    def fit(self, X, y):
        self.classes_ = np.arange(self.table.shape[1])
        return self

    def predict_proba(self, X):
        return self.table[X[:, 0].astype(int)]

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


def sklearn_vote(tables, weights, voting):
    n, k = tables[0].shape
    X, y = np.arange(n)[:, None], np.arange(n) % k
    clf = VotingClassifier(
        [(f"m{i}", Fixed(t)) for i, t in enumerate(tables)], voting=voting, weights=weights
    )
    clf.fit(X, y)
    return clf


def probability_tables(members: int, rows: int, labels: int):
    raw = arrays(np.float64, (members, rows, labels), elements=st.floats(0.01, 1.0))
    return raw.map(lambda a: a / a.sum(axis=-1, keepdims=True))


@settings(max_examples=60, deadline=None)
@given(probability_tables(3, 7, 3), st.lists(st.floats(0.1, 3.0), min_size=3, max_size=3))
def test_soft_vote_equals_sklearn(tables, weights):
    ours = SoftVote([MockModel(f"m{i}") for i in range(3)], weights).combine(list(tables))
    clf = sklearn_vote(list(tables), weights, "soft")
    X = np.arange(7)[:, None]
    np.testing.assert_allclose(ours, clf.predict_proba(X), atol=1e-12)
    assert (ours.argmax(axis=1) == clf.predict(X)).all()


@settings(max_examples=60, deadline=None)
@given(probability_tables(4, 9, 3), st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=4, max_size=4))
def test_hard_vote_equals_sklearn_including_ties(tables, weights):
    ours = HardVote([MockModel(f"m{i}") for i in range(4)], weights).combine(list(tables))
    clf = sklearn_vote(list(tables), weights, "hard")
    assert (ours.argmax(axis=1) == clf.predict(np.arange(9)[:, None])).all()


def test_hard_vote_tie_goes_to_the_lowest_label():
    a = np.array([[0.9, 0.1, 0.0]])
    b = np.array([[0.0, 0.1, 0.9]])
    shares = HardVote([MockModel("a"), MockModel("b")]).combine([a, b])
    assert shares.argmax(axis=1).tolist() == [0]


def test_logit_mean_is_a_normalised_product_of_experts():
    tables = [np.array([[0.7, 0.2, 0.1]]), np.array([[0.2, 0.5, 0.3]])]
    ours = LogitMean([MockModel("a"), MockModel("b")], [1, 3]).combine(tables)
    product = tables[0] ** 0.25 * tables[1] ** 0.75
    np.testing.assert_allclose(ours, product / product.sum(), atol=1e-12)
    # A member certain that a label is wrong vetoes it, which soft voting does not.
    veto = [np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])]
    assert LogitMean([MockModel("a"), MockModel("b")]).combine(veto)[0, 0] == pytest.approx(1.0)
    assert SoftVote([MockModel("a"), MockModel("b")]).combine(veto)[0, 1] == pytest.approx(0.25)


def test_weights_are_checked():
    with pytest.raises(ModelError, match="2 weights for 3 members"):
        SoftVote([MockModel("a"), MockModel("b"), MockModel("c")], [1, 2])
    with pytest.raises(ModelError, match="non-negative"):
        SoftVote([MockModel("a"), MockModel("b")], [1, -1])


PROMPTS = [
    [{"role": "user", "content": "Write an outline for a short article about honeybees."}],
    [{"role": "user", "content": "The food was cold and the staff were rude."}],
]


@pytest.fixture(scope="module")
def tiny(tiny_causal_dir) -> HFCausalLM:
    return HFCausalLM.load("tiny", str(tiny_causal_dir), CausalLMOptions(device="cpu"))


def test_token_average_of_one_model_reproduces_it(tiny, tiny_causal_dir):
    greedy = GenerationSettings(max_new_tokens=12)
    single = tiny.generate(PROMPTS, greedy)
    assert TokenAverage([tiny]).model("e").generate(PROMPTS, greedy) == single
    copy = HFCausalLM.load("copy", str(tiny_causal_dir), CausalLMOptions(device="cpu"))
    assert TokenAverage([tiny, copy, tiny], [1, 2, 3]).model("e").generate(PROMPTS, greedy) == single
    penalised = GenerationSettings(max_new_tokens=12, repetition_penalty=1.3)
    assert TokenAverage([tiny]).model("e").generate(PROMPTS, penalised) == tiny.generate(PROMPTS, penalised)


def test_token_average_needs_one_tokenizer(tiny, tiny_classifier_dir):
    from transformers import AutoTokenizer

    other = HFCausalLM("other", tiny.model, AutoTokenizer.from_pretrained(tiny_classifier_dir))
    other.tokenizer.add_tokens(["<extra>"])
    with pytest.raises(ModelError, match="member 'other' has a different tokenizer"):
        TokenAverage([tiny, other])


def flow(model, template="sentiment-en", **extra):
    return {
        "name": "ens",
        "inputs": {"text": {}},
        **extra,
        "nodes": [{"id": "n", "template": template, "inputs": {"text": "$input.text"}, "model": model}],
    }


def mock(name, answer):
    return {"name": name, "backend": "mock", "options": {"default": answer}}


def test_workflow_label_ensemble_with_member_trace():
    doc = flow(
        "vote",
        models={"a": mock("a", "positive"), "b": mock("b", "negative"), "c": mock("c", "negative")},
        ensembles={"vote": {"ensemble": "soft_vote", "members": ["a", "b", "c"], "weights": [2, 1, 0.5]}},
    )
    result = Workflow.from_dict(doc).run(text="fine")
    node = result.nodes["n"]
    assert node.output == "positive"  # 2 vs 1.5
    assert node.probabilities == pytest.approx({"positive": 2 / 3.5, "negative": 1.5 / 3.5})
    assert node.members["a"]["output"] == "positive" and node.members["b"]["output"] == "negative"
    assert node.model == "soft_vote(a, b, c)"


def test_heterogeneous_members_causal_lm_and_classifier(tiny_causal_dir, tiny_classifier_dir):
    doc = flow(
        {
            "ensemble": "logit_mean",
            "members": [
                str(tiny_causal_dir),
                {
                    "name": str(tiny_classifier_dir),
                    "options": {"label_map": {"negative": "负面", "positive": "正面"}},
                },
            ],
        },
        template="sentiment-zh",
    )
    result = Workflow.from_dict(doc).run(text="很好")
    assert result["n"] in ("正面", "负面")
    assert set(result.nodes["n"].members) == {str(tiny_causal_dir), str(tiny_classifier_dir)}


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"ensemble": "median", "members": ["x/y"]},
            "unknown ensemble method 'median' (known: hard_vote, logit_mean, rerank, soft_vote, token_average)",
        ),
        (
            {
                "ensemble": "soft_vote",
                "members": [{"name": "a", "backend": "mock"}],
                "weights": [1, 2],
            },
            "2 weights for 1 members",
        ),
        (
            {
                "ensemble": "soft_vote",
                "members": [{"name": "a", "backend": "mock"}],
                "weights": [-1],
            },
            "non-negative",
        ),
        (
            {"ensemble": "token_average", "members": [{"name": "a", "backend": "mock"}]},
            "ensemble 'token_average' combines generated text, but template 'sentiment-en' answers with label",
        ),
    ],
)
def test_ensemble_errors_name_the_node(model, message):
    with pytest.raises(WorkflowError) as info:
        Workflow.from_dict(flow(model), source="ens.yaml")
    assert "ens.yaml: node 'n', field 'model'" in str(info.value) and message in str(info.value)


def test_label_set_mismatch_is_named_at_load(tiny_classifier_dir):
    wf = Workflow.from_dict(
        flow(
            {"ensemble": "soft_vote", "members": [str(tiny_classifier_dir)]},
            template="sentiment-zh",
        ),
        source="ens.yaml",
    )
    with pytest.raises(WorkflowError, match="node 'n', field 'model': .*has no label '正面'"):
        wf.run(text="x")


def test_different_tokenizers_named_at_load(tiny_causal_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = tmp_path / "other"
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_dir)
    tokenizer.add_tokens(["<extra>"])
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(other)
    tokenizer.save_pretrained(other)
    doc = flow(
        {"ensemble": "token_average", "members": [str(tiny_causal_dir), str(other)]},
        template="summary-en",
    )
    with pytest.raises(
        WorkflowError,
        match="node 'n', field 'model': token_average: member '.*other' has a different tokenizer",
    ):
        Workflow.from_dict(doc, source="ens.yaml").run(text="x")


def test_rerank_picks_the_best_scored_candidate(tiny, tiny_causal_dir):
    doc = flow(
        {"ensemble": "rerank", "members": [str(tiny_causal_dir), str(tiny_causal_dir)]},
        template="summary-en",
        generation={"max_new_tokens": 6},
    )
    result = Workflow.from_dict(doc).run(text="Bees dance to tell other bees where flowers are.")
    details = result.nodes["n"].members["details"]
    assert len(details["candidates"]) == 2 and len(details["scores"]) == 2
    assert details["members"] == [str(tiny_causal_dir)] * 2  # which member wrote each candidate
    assert result.nodes["n"].raw == details["candidates"][details["winner"]]


def test_weights_whose_sum_overflows_are_refused() -> None:
    from ift_engine.errors import ModelError
    from ift_engine.models.resolve import check_weights

    with pytest.raises(ModelError, match="positive, finite sum"):
        check_weights([1e308, 1e308], 2)


def test_a_label_nodes_jobs_and_an_ensemble_members_meet_at_one_worker_with_their_own_answers():
    """Both classify with the same labels; waiting together for a busy worker, each still gets
    answers of its own kind (a label node's Answers, a member's probabilities)."""
    from ift_engine.models.base import GenerationSettings
    from ift_engine.workflow.calls import Answer, submit

    doc = flow({**mock("a", "positive"), "options": {"default": "positive", "delay": 0.3}})
    wf = Workflow.from_dict(doc)
    bound = wf.graph.node("n")
    worker = wf.pool.worker(bound.model)
    prompt = [{"role": "user", "content": "fine"}]
    busy = worker.generate([prompt], GenerationSettings())  # both jobs below wait for it
    answers = submit(bound, bound.generation, wf.pool, [prompt], None)
    probabilities = worker.classify([prompt], bound.template.labels)  # what an ensemble member asks
    assert busy.result(10) and isinstance(answers.result(10)[0], Answer)
    assert probabilities.result(10)[0] == [1.0, 0.0]
