"""Random YAML-like documents either load or raise the engine's own error, never anything else."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ift_engine import IftError, Workflow

KEYS = [
    "name",
    "inputs",
    "nodes",
    "model",
    "models",
    "outputs",
    "generation",
    "id",
    "template",
    "instruction",
    "answer",
    "labels",
    "paraphrase",
    "parser",
    "backend",
    "options",
    "topic",
    "max_new_tokens",
    "temperature",
    "type",
    "default",
    "description",
]
VALUES = st.sampled_from(
    [
        "$input.topic",
        "a.output",
        "outline-en",
        "mock",
        "text",
        "label",
        "{topic}",
        "sentiment-en",
        "hf-causal",
        "",
        "{",
        "x",
    ]
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True),
    VALUES,
    st.text(max_size=8),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=5), st.integers()),
            children,
            max_size=5,
        ),
    ),
    max_leaves=25,
)


def shaped() -> st.SearchStrategy[dict]:
    """Documents close to a real workflow, so validation gets past the first field."""
    node = st.fixed_dictionaries(
        {
            "id": st.sampled_from(["a", "b", "c"]),
            "template": st.sampled_from(["outline-en", "topic-en", "nope"]),
        },
        optional={
            "inputs": st.dictionaries(st.sampled_from(["topic", "text"]), VALUES, max_size=2),
            "model": st.one_of(VALUES, st.fixed_dictionaries({"name": VALUES, "backend": VALUES})),
            "generation": documents,
            "parser": VALUES,
            "paraphrase": st.integers(-1, 9),
        },
    )
    return st.fixed_dictionaries(
        {"name": VALUES, "nodes": st.lists(node, max_size=3)},
        optional={
            "inputs": documents,
            "model": documents,
            "outputs": documents,
            "models": documents,
        },
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(documents, shaped()))
def test_loader_raises_only_engine_errors(doc):
    text = yaml.safe_dump(doc, allow_unicode=True)
    try:
        Workflow.from_yaml_text(text, source="fuzz.yaml")
    except IftError as exc:
        assert str(exc).startswith("fuzz.yaml")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_raises_only_engine_errors(text):
    try:
        workflow = Workflow.from_yaml_text(text, source="fuzz.yaml")
    except IftError as exc:
        assert str(exc).startswith("fuzz.yaml"), exc  # the error names the file
    else:
        assert workflow.graph.order()  # what loads is a workflow with nodes to run
