"""Workflows that decide: `when:` conditions, skipped nodes, input defaults and `first_of`,
branching inside one batch, `repeat` loops, their traces and drawings, and load-time errors."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_cli import ift
from test_hostile_input import assert_one_line_error  # the one definition of the promise

from ift_engine import MockModel, Workflow, WorkflowError
from ift_engine.workflow.picture import draw_graph

WORKFLOWS = Path(__file__).parent.parent / "workflows"


def mock(**options: Any) -> dict[str, Any]:
    return {"name": "mock", "backend": "mock", "options": options}


def load(doc: dict[str, Any]) -> Workflow:
    return Workflow.from_yaml_text(
        yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), source="flow.yaml"
    )


def mock_model(wf: Workflow, node: str) -> MockModel:
    model = wf.pool.get(wf.graph.node(node).model)
    assert isinstance(model, MockModel)
    return model


#: A router: a label node, two branches on separate models, a join reading whichever ran.
ROUTER: dict[str, Any] = {
    "name": "router",
    "inputs": {"review": "string"},
    "models": {
        "judge": mock(answers={"awful": "negative", "lovely": "positive"}),
        "sorry": mock(default="We are sorry."),
        "glad": mock(default="Thank you!"),
    },
    "model": mock(),  # echoes its prompt
    "nodes": [
        {
            "id": "sentiment",
            "template": "sentiment-en",
            "inputs": {"text": "$input.review"},
            "model": "judge",
        },
        {
            "id": "apology",
            "when": {"node": "sentiment", "equals": "negative"},
            "instruction": "Apologise for: {review}",
            "inputs": {"review": "$input.review"},
            "model": "sorry",
        },
        {
            "id": "thanks",
            "when": {"node": "sentiment", "equals": "positive"},
            "instruction": "Thank for: {review}",
            "inputs": {"review": "$input.review"},
            "model": "glad",
        },
        {
            "id": "reply",
            "instruction": "Reply: {draft}",
            "inputs": {"draft": {"first_of": ["apology.output", "thanks.output"]}},
        },
    ],
    "outputs": {"sentiment": "sentiment.output", "reply": "reply.output", "apology": "apology.output"},
}


def test_a_false_condition_skips_the_node_and_first_of_joins_the_branch_that_ran():
    wf = load(ROUTER)
    bad = wf.run(review="An awful stay")
    assert bad.outputs == {
        "sentiment": "negative",
        "reply": "Reply: We are sorry.",
        "apology": "We are sorry.",
    }
    assert bad.nodes["thanks"].skipped == "its condition is false: sentiment = positive"
    assert bad.nodes["thanks"].output is None and bad.nodes["thanks"].prompt == []
    good = wf.run(review="A lovely stay")
    assert good.outputs == {"sentiment": "positive", "reply": "Reply: Thank you!", "apology": None}
    assert good.nodes["apology"].skipped and good.nodes["reply"].skipped is None
    assert mock_model(wf, "apology").calls[0].prompts == ("Apologise for: An awful stay",)
    assert len(mock_model(wf, "thanks").calls) == 1  # the skipped run asked nothing


def test_nodes_that_read_a_skipped_node_are_skipped_unless_the_input_has_a_default():
    doc = copy.deepcopy(ROUTER)
    doc["nodes"][3]["inputs"] = {"draft": "apology.output"}
    doc["nodes"].append({"id": "after", "instruction": "After: {reply}", "inputs": {"reply": "reply.output"}})
    doc["nodes"].append(
        {
            "id": "note",
            "instruction": "Note: {apology}",
            "inputs": {"apology": {"from": "apology.output", "default": "(none)"}},
        }
    )
    doc["outputs"] = {"reply": "reply.output", "after": "after.output", "note": "note.output"}
    result = load(doc).run(review="A lovely stay")
    assert result.outputs == {"reply": None, "after": None, "note": "Note: (none)"}
    assert result.nodes["reply"].skipped == "nothing to read for input 'draft' (apology.output: skipped)"
    assert result.nodes["after"].skipped == "nothing to read for input 'reply' (reply.output: skipped)"


def test_conditions_on_inputs_paths_and_combinations():
    doc = {
        "name": "gate",
        "inputs": {"lang": "string", "meta": {"type": "object", "default": {}}},
        "model": mock(),
        "nodes": [
            {
                "id": "zh_or_en",
                "when": {"input": "lang", "in": ["zh", "en"]},
                "instruction": "A {lang}",
                "inputs": {"lang": "$input.lang"},
            },
            {
                "id": "valid_not_fr",
                "when": {
                    "all": [
                        {"input": "meta", "path": "check.valid", "is": True},
                        {"not": {"input": "lang", "equals": "fr"}},
                    ]
                },
                "instruction": "B {lang}",
                "inputs": {"lang": "$input.lang"},
            },
            {
                "id": "either",
                "when": {
                    "any": [
                        {"node": "zh_or_en", "equals": "A zh"},
                        {"input": "meta", "path": "n", "equals": 1},
                    ]
                },
                "instruction": "C {lang}",
                "inputs": {"lang": "$input.lang"},
            },
        ],
    }
    wf = load(doc)

    def ran(**inputs: Any) -> list[str]:
        return sorted(n for n, r in wf.run(inputs).nodes.items() if r.skipped is None)

    assert ran(lang="zh") == ["either", "zh_or_en"]
    assert ran(lang="fr") == []
    assert ran(lang="en", meta={"check": {"valid": True}}) == ["valid_not_fr", "zh_or_en"]
    assert ran(lang="fr", meta={"check": {"valid": True}, "n": 1}) == ["either"]
    assert ran(lang="de", meta={"check": {"valid": 1}}) == []  # `is: true` is not 1
    assert ran(lang="de", meta={"n": True}) == []  # nor does true equal 1


def test_items_of_one_batch_take_different_branches_each_branch_batched():
    wf = load(ROUTER)
    reviews = ["awful 1", "lovely 2", "awful 3", "lovely 4", "awful 5"]
    results = {
        r.id: r for r in wf.run_many([{"id": i, "review": t} for i, t in enumerate(reviews)], batch_size=8)
    }
    assert [results[i].outputs["sentiment"] for i in range(5)] == [
        "negative",
        "positive",
        "negative",
        "positive",
        "negative",
    ]
    judge, sorry, glad = (mock_model(wf, n) for n in ("sentiment", "apology", "thanks"))
    assert [len(c.prompts) for c in judge.calls] == [5]
    assert [c.prompts for c in sorry.calls] == [tuple(f"Apologise for: awful {i}" for i in (1, 3, 5))]
    assert [c.prompts for c in glad.calls] == [tuple(f"Thank for: lovely {i}" for i in (2, 4))]
    rows = [results[i].row() for i in range(5)]
    assert rows[0]["skipped"] == ["thanks"] and rows[1]["skipped"] == ["apology"]
    assert rows[1]["outputs"]["apology"] is None and rows[1]["outputs"]["reply"] == "Reply: Thank you!"


def test_batch_file_rows_carry_skipped_nodes_and_resume(tmp_path):
    wf = load(ROUTER)
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(
        "".join(json.dumps({"id": i, "review": t}) + "\n" for i, t in enumerate(["awful", "lovely"]))
    )
    out = tmp_path / "out.jsonl"
    assert wf.run_file(inputs, out, batch_size=2).done == 2
    with inputs.open("a") as file:
        file.write(json.dumps({"id": 2, "review": "awful again"}) + "\n")
    report = wf.run_file(inputs, out, batch_size=2, resume=True)
    assert (report.done, report.skipped) == (1, 2)
    rows = {row["id"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert rows[1]["outputs"]["apology"] is None and rows[1]["skipped"] == ["apology"]
    assert rows[2]["outputs"]["reply"] == "Reply: We are sorry." and rows[2]["skipped"] == ["thanks"]


# -- repeat ------------------------------------------------------------------------------------

#: A node that rewrites its own answer: the mock answers "done" in the third round.
ROUNDS: dict[str, Any] = {
    "name": "rounds",
    "inputs": {"topic": "string"},
    "model": mock(answers={"round 3": "done"}, default="again"),
    "nodes": [
        {
            "id": "polish",
            "instruction": "round {n} on {topic}, after: {previous}",
            "inputs": {
                "n": "$self.iteration",
                "topic": "$input.topic",
                "previous": {"from": "$self.output", "default": "nothing"},
            },
            "repeat": {"max": 5, "until": {"node": "polish", "equals": "done"}},
        },
        {
            "id": "final",
            "instruction": "Final: {text}",
            "inputs": {"text": "polish.output"},
            "model": {"name": "echo", "backend": "mock"},
        },
    ],
}


def test_repeat_runs_until_its_condition_holds_and_traces_every_round():
    wf = load(ROUNDS)
    result = wf.run(topic="bees")
    polish = result.nodes["polish"]
    assert polish.output == "done" and polish.iteration == 3
    assert [r.output for r in polish.iterations or []] == ["again", "again", "done"]
    assert [r.iteration for r in polish.iterations or []] == [1, 2, 3]
    prompts = [r.prompt[-1]["content"] for r in polish.iterations or []]
    assert prompts == [
        "round 1 on bees, after: nothing",
        "round 2 on bees, after: again",
        "round 3 on bees, after: again",
    ]
    assert result["final"] == "Final: done"
    trace = json.loads(result.to_json())
    assert [r["output"] for r in trace["nodes"]["polish"]["iterations"]] == ["again", "again", "done"]
    assert trace["nodes"]["final"]["iterations"] is None and trace["nodes"]["final"]["skipped"] is None


def test_repeat_stops_after_max_runs():
    doc = copy.deepcopy(ROUNDS)
    doc["nodes"][0]["repeat"] = {"max": 2, "until": {"node": "polish", "equals": "done"}}
    polish = load(doc).run(topic="bees").nodes["polish"]
    assert [r.output for r in polish.iterations or []] == ["again", "again"]
    doc["nodes"][0]["repeat"] = {"max": 4}  # no condition: always four runs
    assert len(load(doc).run(topic="bees").nodes["polish"].iterations or []) == 4


#: rewrite -> check, again until the check says yes; `final` after the loop.
LOOP: dict[str, Any] = {
    "name": "loop",
    "inputs": {"topic": "string"},
    "models": {
        "writer": mock(answers={"round 2": "v2", "round 3": "v3"}, default="v1"),
        "judge": mock(answers={"quick v1": "yes", "v3": "yes"}, default="no"),
    },
    "model": mock(),
    "nodes": [
        {"id": "draft", "instruction": "Draft {topic}", "inputs": {"topic": "$input.topic"}},
        {
            "id": "rewrite",
            "instruction": "round {n}: {topic} {outline}",
            "inputs": {
                "n": "$self.iteration",
                "topic": "$input.topic",
                "outline": {"first_of": ["$self.output", "draft.output"]},
            },
            "model": "writer",
            "repeat": {"max": 3, "until": {"node": "check", "equals": "yes"}},
        },
        {
            "id": "check",
            "instruction": "OK? {topic} {outline}",
            "answer": "label",
            "labels": ["yes", "no"],
            "inputs": {"topic": "$input.topic", "outline": "rewrite.output"},
            "model": "judge",
        },
        {"id": "final", "instruction": "Final {outline}", "inputs": {"outline": "rewrite.output"}},
    ],
}


def test_a_loop_runs_its_check_each_round_and_batches_items_still_in_it():
    wf = load(LOOP)
    assert wf.graph.repeats == {"rewrite": frozenset({"rewrite", "check"})}
    results = {r.id: r for r in wf.run_many([{"id": 1, "topic": "quick"}, {"id": 2, "topic": "slow"}])}
    quick, slow = results[1], results[2]
    assert [r.output for r in quick.nodes["rewrite"].iterations or []] == ["v1"]
    assert [r.output for r in slow.nodes["rewrite"].iterations or []] == ["v1", "v2", "v3"]
    assert [r.output for r in slow.nodes["check"].iterations or []] == ["no", "no", "yes"]
    assert slow.nodes["rewrite"].iterations[1].prompt[-1]["content"] == "round 2: slow v1"  # type: ignore[index]
    assert quick.nodes["rewrite"].iterations[0].prompt[-1]["content"] == "round 1: quick Draft quick"  # type: ignore[index]
    assert (quick["final"], slow["final"]) == ("Final v1", "Final v3")
    writer = mock_model(wf, "rewrite")
    assert [len(c.prompts) for c in writer.calls] == [2, 1, 1]  # round 1 of both items together
    # the node after the loop ran once per item, after its last round
    final = mock_model(wf, "final")
    assert sorted(p for c in final.calls for p in c.prompts if p.startswith("Final")) == [
        "Final v1",
        "Final v3",
    ]


def test_events_hear_every_round():
    wf = load(LOOP)
    heard: list[tuple[str, int | None]] = []
    wf.runner().run_batch(
        [(None, {"topic": "slow"})], on_node_done=lambda item, node: heard.append((node.node, node.iteration))
    )
    assert heard == [
        ("draft", None),
        ("rewrite", 1),
        ("check", 1),
        ("rewrite", 2),
        ("check", 2),
        ("rewrite", 3),
        ("check", 3),
        ("final", None),
    ]


def test_the_service_reply_and_stream_carry_skipped_nodes_and_rounds():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from test_serve import app_for, sse_events

    with TestClient(app_for(ROUTER, LOOP)) as client:
        body = client.post(
            "/v1/workflows/router/run", json={"inputs": {"review": "lovely"}, "trace": True}
        ).json()
        assert body["outputs"]["apology"] is None and body["outputs"]["reply"] == "Reply: Thank you!"
        assert body["nodes"]["apology"]["skipped"] == "its condition is false: sentiment = negative"
        assert body["nodes"]["apology"]["output"] is None and body["nodes"]["thanks"]["skipped"] is None
        assert body["trace"]["nodes"]["apology"]["skipped"]
        run = "/v1/workflows/loop/run"
        body = client.post(run, json={"inputs": {"topic": "slow"}, "trace": True}).json()
        assert body["nodes"]["rewrite"]["iterations"] == 3 and "iterations" not in body["nodes"]["draft"]
        assert [r["output"] for r in body["trace"]["nodes"]["check"]["iterations"]] == ["no", "no", "yes"]
        stream = client.post(run, json={"inputs": {"topic": "slow"}, "stream": True})
        finished = [(d["node"], d["iteration"]) for e, d in sse_events(stream.text) if e == "node_finished"]
        assert finished[:3] == [("draft", None), ("rewrite", 1), ("check", 1)] and len(finished) == 8
        stream = client.post("/v1/workflows/router/run", json={"inputs": {"review": "awful"}, "stream": True})
        skipped = {d["node"]: d["skipped"] for e, d in sse_events(stream.text) if e == "node_finished"}
        assert skipped["thanks"] and skipped["apology"] is None


# -- drawing -----------------------------------------------------------------------------------


def test_mermaid_and_picture_draw_the_conditions_on_the_edges():
    wf = load(ROUTER)
    text = wf.mermaid()
    assert 'n_sentiment -->|"when sentiment = negative"| n_apology' in text
    assert 'n_sentiment -->|"when sentiment = positive"| n_thanks' in text
    assert "n_apology --> n_reply" in text and "n_thanks --> n_reply" in text
    loop = load(LOOP).mermaid()
    assert 'n_check -.->|"repeat up to 3× until check = yes"| n_rewrite' in loop
    assert (
        "n_rewrite --> n_check" in loop
        and "repeat up to 3× until check = yes" in loop.split("n_check -.->")[0]
    )

    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text, to be found
        draw_graph(wf.graph, buffer, format="svg")
    svg = buffer.getvalue().decode()
    assert "when sentiment = negative" in svg and "when sentiment = positive" in svg


# -- the shipped examples, on the mock backend -------------------------------------------------


def shipped(name: str, model: dict[str, Any]) -> Workflow:
    doc = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    doc["model"] = model
    return load(doc)


def test_triage_routes_each_review_to_its_reply():
    wf = shipped(
        "triage.yaml",
        mock(
            answers={
                "apology": "Sorry.",
                "thank-you": "Thanks.",
                "Rewrite": "Polished.",
                "脏": "负面",
                "好": "正面",
            }
        ),
    )
    results = {
        r.id: r for r in wf.run_many([{"id": 1, "review": "房间很脏"}, {"id": 2, "review": "服务很好"}])
    }
    assert results[1].outputs == {"sentiment": "负面", "reply": "Polished."}
    assert results[2].outputs == {"sentiment": "正面", "reply": "Polished."}
    assert results[1].nodes["thanks"].skipped and results[2].nodes["apology"].skipped
    assert results[1].nodes["reply"].prompt[-1]["content"].endswith("Sorry.")
    assert results[2].nodes["reply"].prompt[-1]["content"].endswith("Thanks.")


def test_refine_rewrites_until_the_check_says_yes_at_most_three_times():
    accepting = shipped("refine.yaml", mock(answers={"Answer yes or no": "yes"}, default="- A\n- B"))
    result = accepting.run(topic="bees")
    assert result.outputs == {"outline": ["A", "B"], "accepted": "yes"}
    assert len(result.nodes["rewrite"].iterations or []) == 1
    refusing = shipped("refine.yaml", mock(answers={"Answer yes or no": "no"}, default="- A\n- B"))
    result = refusing.run(topic="bees")
    assert result.outputs["accepted"] == "no"
    assert [r.iteration for r in result.nodes["check"].iterations or []] == [1, 2, 3]
    assert "\n\nA\nB" in result.nodes["rewrite"].iterations[1].prompt[-1]["content"]  # type: ignore[index]


# -- load-time errors --------------------------------------------------------------------------


def router_with(index: int, **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(ROUTER)
    doc["nodes"][index].update(changes)
    return doc


def loop_with(index: int, **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(LOOP)
    doc["nodes"][index].update(changes)
    return doc


NESTED = {"node": "sentiment", "equals": "x"}
for _ in range(9):
    NESTED = {"not": NESTED}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            router_with(1, when={"node": "sentimnet", "equals": "negative"}),
            "flow.yaml: node 'apology', field 'when': unknown node 'sentimnet'",
        ),
        (
            router_with(1, when={"input": "lang", "equals": "zh"}),
            "node 'apology', field 'when': input 'lang' is not a declared workflow input (declared: review)",
        ),
        (
            router_with(1, when={"node": "sentiment"}),
            "nodes[1] (id 'apology').when: Value error, a comparison is exactly one of 'equals', 'in' or 'is'",
        ),
        (
            router_with(1, when={"node": "sentiment", "eqals": "x"}),
            "nodes[1] (id 'apology').when.eqals: Extra inputs are not permitted",
        ),
        (
            router_with(1, when={"node": "sentiment", "input": "review", "equals": "x"}),
            "a comparison reads exactly one of 'node' or 'input'",
        ),
        (
            router_with(1, when={"all": []}),
            "nodes[1] (id 'apology').when.all: List should have at least 1 item",
        ),
        (
            router_with(1, when={"node": "sentiment", "is": "yes"}),
            "'is' takes true, false or null, not 'yes'",
        ),
        (router_with(1, when={"node": "sentiment", "path": "a..b", "is": True}), "path 'a..b' must be"),
        (router_with(1, when=NESTED), "conditions nest more than 8 levels deep"),
        (
            router_with(1, when={"node": "reply", "equals": "x"}),
            "node 'apology', field 'when': the condition reads node 'reply', which depends on this node "
            "(cycle: ",
        ),
        (
            router_with(1, when={"node": "apology", "equals": "x"}),
            "node 'apology', field 'when': a node's condition cannot read its own output",
        ),
        (
            router_with(3, inputs={"draft": {"first_of": "apology.output"}}),
            "node 'reply', field 'inputs.draft': 'first_of' takes a list of references",
        ),
        (
            router_with(3, inputs={"draft": {"first_of": ["apology.output", "sorry"]}}),
            "node 'reply', field 'inputs.draft': 'sorry' is no reference",
        ),
        (
            router_with(3, inputs={"draft": {"first_of": ["apology.output", "gone.output"]}}),
            "node 'reply', field 'inputs.draft': gone.output refers to unknown node 'gone'",
        ),
        (
            router_with(3, inputs={"draft": {"from": "apology.output", "defualt": ""}}),
            "node 'reply', field 'inputs.draft': unknown key 'defualt'",
        ),
        (
            router_with(3, inputs={"draft": "$self.output"}),
            "node 'reply', field 'inputs.draft': $self.output reads this node's previous run: give the node 'repeat:'",
        ),
        (
            loop_with(1, repeat={"max": 11}),
            "nodes[1] (id 'rewrite').repeat.max: Input should be less than or equal to 10",
        ),
        (
            loop_with(1, repeat={"max": 2, "untill": {}}),
            "nodes[1] (id 'rewrite').repeat.untill: unknown field (did you mean 'until'?",
        ),
        (
            loop_with(1, inputs={"n": "$self.iteration", "topic": "$input.topic", "outline": "$self.output"}),
            "node 'rewrite', field 'inputs.outline': $self.output has no value on the first run",
        ),
        (
            loop_with(1, repeat={"max": 2, "until": {"node": "nope", "equals": "yes"}}),
            "node 'rewrite', field 'repeat.until': unknown node 'nope'",
        ),
        (
            loop_with(2, repeat={"max": 2}),
            "node 'check', field 'repeat': this node runs inside the repeat of 'rewrite'",
        ),
    ],
)
def test_malformed_decisions_are_one_line_errors_naming_node_and_field(doc, expected):
    with pytest.raises(WorkflowError) as info:
        load(doc)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_ift_validate_refuses_a_bad_condition_in_one_line(tmp_path):
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        yaml.safe_dump(router_with(2, when={"node": "sentiment", "in": "positive"}), allow_unicode=True),
        encoding="utf-8",
    )
    done = ift("validate", str(flow))
    assert_one_line_error(
        done.returncode, done.stderr, str(flow), "nodes[2] (id 'thanks').when.in", "valid list"
    )


def test_conditions_survive_a_yaml_round_trip():
    wf = load(
        loop_with(3, when={"any": [{"node": "check", "is": None}, {"node": "draft", "in": ["a", "b"]}]})
    )
    again = Workflow.from_yaml_text(wf.to_yaml())
    assert again.to_dict() == wf.to_dict() == Workflow.from_dict(wf.to_dict()).to_dict()  # as Ray ships it
    assert again.to_dict()["nodes"][3]["when"] == {
        "any": [{"node": "check", "is": None}, {"node": "draft", "in": ["a", "b"]}]
    }
    assert again.to_dict()["nodes"][1]["repeat"] == {"max": 3, "until": {"node": "check", "equals": "yes"}}
