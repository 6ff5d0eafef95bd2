"""Structured answers: decoding limited to a JSON Schema, a regex, a label set or a line count,
per row inside continuous batching (PyTorch and onnxruntime-genai), the parsed value validated;
schemas and regexes checked when a workflow loads, hostile ones refused in seconds; the
service's ``response_format``."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ift_engine import GenerationSettings, Workflow, cli
from ift_engine.models.hf_causal import CausalLMOptions, HFCausalLM
from ift_engine.models.worker import Completion, ModelWorker
from ift_engine.structured import (
    DEFAULT_INTEGER_BOUND,
    Constraint,
    choice_constraint,
    json_constraint,
    lines_constraint,
    regex_constraint,
)

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
ITEMS = {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 3}
FLAGS = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "level": {"enum": ["low", "high"]},
        "score": {"type": "number"},
    },
    "required": ["ok", "level"],
}
QUESTIONS = ["Describe a person.", "Is the sky blue?", "Name three fruits.", "Say hello.", "What is 2+2?"]
GREEDY = GenerationSettings(max_new_tokens=60, repetition_penalty=1.2)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def constraints() -> list[Constraint | None]:
    return [
        json_constraint(PERSON),
        json_constraint(ITEMS),
        None,
        regex_constraint(r"[0-9]{3}-[a-z]{2,4}"),
        choice_constraint(["positive", "negative"]),
        json_constraint(FLAGS),
        None,
        regex_constraint("(?:[a-z]{1,5}\n){2}[a-z]{1,5}"),
    ]


SCHEMAS: dict[int, Any] = {0: PERSON, 1: ITEMS, 5: FLAGS}


def assert_fits(completion: Completion, constraint: Constraint | None, index: int) -> None:
    if constraint is None:  # a random model's free text runs to its token limit
        return
    assert completion.finish == "stop", completion
    assert constraint.accepts(completion.text), completion.text
    if index in SCHEMAS:
        jsonschema.validate(json.loads(completion.text), SCHEMAS[index])


@pytest.fixture(scope="module")
def tiny(tiny_causal_dir: Path) -> HFCausalLM:
    return HFCausalLM.load("tiny", str(tiny_causal_dir), CausalLMOptions(device="cpu", batch_size=8))


def mixed_batch(model: Any, settings: GenerationSettings) -> tuple[list[Completion], list[Completion]]:
    """Every constraint (and unconstrained rows) in one batch, then each row alone."""
    worker = ModelWorker(model)
    try:
        kinds = constraints()
        futures = [worker.generate([chat(QUESTIONS[i % 5])], settings, None, c) for i, c in enumerate(kinds)]
        together = [f.result(120)[0] for f in futures]
        alone = [
            worker.generate([chat(QUESTIONS[i % 5])], settings, None, c).result(120)[0]
            for i, c in enumerate(kinds)
        ]
    finally:
        worker.close()
    return together, alone


def test_rows_with_different_constraints_share_a_batch_and_always_fit(tiny: HFCausalLM) -> None:
    together, alone = mixed_batch(tiny, GREEDY)
    for index, (completion, constraint) in enumerate(zip(together, constraints())):
        assert_fits(completion, constraint, index)
    # Greedy: a row's answer does not depend on the rows beside it, constrained or not.
    assert [c.text for c in together] == [c.text for c in alone]
    free = tiny.generate([chat(QUESTIONS[2])], GREEDY)[0]
    assert together[2].text == free  # an unconstrained row is untouched by its neighbours' masks


def test_seeded_sampling_under_a_constraint_still_fits(tiny: HFCausalLM) -> None:
    settings = GenerationSettings(max_new_tokens=60, temperature=1.5, seed=7)
    together, alone = mixed_batch(tiny, settings)
    for index, (completion, constraint) in enumerate(zip(together, constraints())):
        assert_fits(completion, constraint, index)
    assert [c.text for c in together] == [c.text for c in alone]


def test_line_counts_and_labels_are_grammars_of_their_own() -> None:
    assert lines_constraint(3).accepts("- bees\n- ants\n3. wasps")
    assert not lines_constraint(3).accepts("- bees\n- ants") and not lines_constraint(3).accepts("a\n\nb\nc")
    assert choice_constraint(["正面", "负面"]).accepts("负面") and not choice_constraint(
        ["正面", "负面"]
    ).accepts("负")


def test_unbounded_fields_get_bounds_for_decoding_and_a_cut_answer_says_so(tiny: HFCausalLM) -> None:
    loose = json_constraint({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    assert f'"maximum": {DEFAULT_INTEGER_BOUND}' in loose.text
    worker = ModelWorker(tiny)
    try:
        [whole] = worker.generate(
            [chat("A number?")], GenerationSettings(max_new_tokens=40), None, loose
        ).result(60)
        [cut] = worker.generate(
            [chat("A number?")], GenerationSettings(max_new_tokens=3), None, loose
        ).result(60)
    finally:
        worker.close()
    assert whole.finish == "stop" and abs(json.loads(whole.text)["n"]) <= DEFAULT_INTEGER_BOUND
    assert cut.finish == "length" and not loose.accepts(cut.text)


# -- workflows --------------------------------------------------------------------------------------


def extract_flow(model: dict[str, Any], schema: Any = PERSON, **node: Any) -> dict[str, Any]:
    return {
        "name": "x",
        "inputs": {"text": "string"},
        "model": model,
        "generation": {"max_new_tokens": 60},
        "nodes": [
            {
                "id": "record",
                "instruction": "Extract: {text}",
                "answer": "json",
                "schema": schema,
                "inputs": {"text": "$input.text"},
                **node,
            },
        ],
    }


def test_a_json_node_on_pytorch_outputs_the_validated_object_and_traces_the_text(
    tiny_causal_dir: Path,
) -> None:
    wf = Workflow.from_dict(extract_flow({"name": str(tiny_causal_dir), "options": {"device": "cpu"}}))
    results = list(wf.run_many([{"text": q} for q in QUESTIONS], cache=False))
    for result in results:
        assert result.error is None, result.error
        record = result.outputs["record"]
        jsonschema.validate(record, PERSON)
        assert isinstance(record["age"], int)
        assert json.loads(result.nodes["record"].raw or "") == record
    cut = Workflow.from_dict(
        extract_flow(
            {"name": str(tiny_causal_dir), "options": {"device": "cpu"}}, generation={"max_new_tokens": 4}
        )
    )
    [failed] = list(cut.run_many([{"text": "Bob"}], cache=False))
    assert failed.error is not None and "the answer was cut at max_new_tokens (4)" in failed.error.message


def test_mock_answers_are_validated_against_the_schema() -> None:
    good = {"name": "m", "backend": "mock", "options": {"default": '{"name": "Ann", "age": 41}'}}
    result = Workflow.from_dict(extract_flow(good)).run(text="Ann is 41", cache=False)
    assert result.outputs["record"] == {"name": "Ann", "age": 41}
    bad = {"name": "m", "backend": "mock", "options": {"default": '{"name": "Ann", "age": "41"}'}}
    [failed] = list(Workflow.from_dict(extract_flow(bad)).run_many([{"text": "Ann"}], cache=False))
    assert failed.error is not None
    assert (
        failed.error.message == "the answer does not match the schema at age: '41' is not of type 'integer'"
    )


def test_lines_with_items_and_regex_answers_are_checked_on_the_mock() -> None:
    lines = {"id": "a", "instruction": "List {t}", "answer": "lines", "items": 3, "inputs": {"t": "$input.t"}}
    coded = {"id": "b", "instruction": "Code {t}", "regex": "[A-Z]{2}-[0-9]+", "inputs": {"t": "$input.t"}}
    doc = {
        "name": "l",
        "inputs": {"t": "string"},
        "nodes": [lines, coded],
        "model": {
            "name": "m",
            "backend": "mock",
            "options": {"answers": {"List": "- a\n- b\n- c", "Code": "AB-12"}},
        },
    }
    assert Workflow.from_dict(doc).run(t="x", cache=False).outputs == {"a": ["a", "b", "c"], "b": "AB-12"}
    doc["model"]["options"]["answers"] = {"List": "- a\n- b", "Code": "ab-12"}
    [failed] = list(Workflow.from_dict(doc).run_many([{"t": "x"}], cache=False))
    assert failed.error is not None and "answer has 2 lines, not the 3 asked for" in failed.error.message
    doc["nodes"] = [coded]
    [failed] = list(Workflow.from_dict(doc).run_many([{"t": "x"}], cache=False))
    assert failed.error is not None and "does not match the regex" in failed.error.message


def test_a_schema_file_next_to_the_workflow(tmp_path: Path) -> None:
    (tmp_path / "person.json").write_text(json.dumps(PERSON))
    mock = {"name": "m", "backend": "mock", "options": {"default": '{"name": "Ann", "age": 4}'}}
    (tmp_path / "flow.yaml").write_text(yaml.safe_dump(extract_flow(mock, schema="person.json")))
    wf = Workflow.from_yaml(tmp_path / "flow.yaml")
    assert wf.graph.node("record").template.schema == PERSON
    assert wf.run(text="Ann", cache=False).outputs["record"]["age"] == 4


def validate_error(capsys: pytest.CaptureFixture[str], tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(doc))
    began = time.perf_counter()
    code = cli.main(["validate", str(path)])
    assert time.perf_counter() - began < 5  # bounded: refused in seconds, never a hang
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


MOCK = {"name": "m", "backend": "mock"}
DEEP: dict[str, Any] = {"type": "string"}
for _ in range(150):
    DEEP = {"type": "array", "items": DEEP}
HUGE = {
    "type": "object",
    "properties": {f"field{i}": {"type": "string", "description": "x" * 40} for i in range(2000)},
}
BAD_LOADS = {
    "bad type": (extract_flow(MOCK, {"type": "objekt"}), "field 'schema': not a valid JSON Schema at type"),
    "bad bound": (
        extract_flow(MOCK, {"type": "string", "maxLength": -1}),
        "field 'schema': not a valid JSON Schema at maxLength",
    ),
    "unsupported keyword": (
        extract_flow(MOCK, {"type": "array", "uniqueItems": True}),
        "constrained decoding cannot use it: Unimplemented keys",
    ),
    "remote ref": (extract_flow(MOCK, {"$ref": "https://example.com/s.json"}), "field 'schema'"),
    "not an object": (extract_flow(MOCK, [1, 2]), "nodes[0] (id 'record').schema"),
    "huge": (extract_flow(MOCK, HUGE), "the schema is larger than 64 KiB"),
    "deep": (extract_flow(MOCK, "deep.json"), "field 'schema': the schema: nested more than 100 levels deep"),
    "missing file": (extract_flow(MOCK, "nowhere.json"), "field 'schema': "),
    "schema on text": (extract_flow(MOCK, answer="text"), "'schema' is only allowed with answer 'json'"),
    "bad regex": (
        extract_flow(MOCK, None, answer="text", regex="a(b"),
        "field 'regex': constrained decoding cannot use it: invalid regex",
    ),
    "lookaround": (extract_flow(MOCK, None, answer="text", regex="(?<=a)b"), "field 'regex'"),
    "long regex": (
        extract_flow(MOCK, None, answer="text", regex="a" * 5000),
        "the regex is longer than 4,096 characters",
    ),
    "items 0": (
        extract_flow(MOCK, None, answer="lines", items=0),
        "items: Input should be greater than or equal to 1",
    ),
    "template node": (
        {
            **extract_flow(MOCK),
            "nodes": [
                {"id": "s", "template": "summary-en", "schema": PERSON, "inputs": {"text": "$input.text"}}
            ],
        },
        "'schema', 'regex' and 'items' belong to inline instructions",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_LOADS))
def test_bad_answer_forms_are_one_line_errors_at_validate(capsys, tmp_path, case) -> None:
    doc, expected = BAD_LOADS[case]
    (tmp_path / "deep.json").write_text(json.dumps(DEEP))
    if doc["nodes"][0].get("schema", 0) is None:
        del doc["nodes"][0]["schema"]
    line = validate_error(capsys, tmp_path, doc)
    assert expected in line and "flow.yaml" in line


def test_a_regex_that_backtracks_in_python_checks_an_answer_in_linear_time() -> None:
    answer = "a" * 20_000 + "!"
    mock = {"name": "m", "backend": "mock", "options": {"default": answer}}
    doc = extract_flow(mock, None, answer="text", regex="(a|aa)*(a+)+b")
    del doc["nodes"][0]["schema"]
    began = time.perf_counter()
    [failed] = list(Workflow.from_dict(doc).run_many([{"text": "x"}], cache=False))
    assert time.perf_counter() - began < 5
    assert failed.error is not None and "does not match the regex" in failed.error.message


def test_backends_and_ensembles_that_cannot_constrain_are_refused_at_load(
    capsys, tmp_path, tiny_classifier_dir
) -> None:
    line = validate_error(
        capsys, tmp_path, extract_flow({"name": str(tiny_classifier_dir), "backend": "hf-classifier"})
    )
    assert (
        "node 'record', field 'schema': answer: json with a schema is not supported by backend 'hf-classifier'"
        in line
    )
    ensemble = {"ensemble": "rerank", "members": [MOCK, MOCK]}
    line = validate_error(capsys, tmp_path, extract_flow(ensemble))
    assert "answer: json with a schema is not supported by ensembles" in line


def test_the_extract_workflow_feeds_its_record_to_the_summary_on_the_mock(capsys) -> None:
    path = Path(__file__).parent.parent / "workflows" / "extract.yaml"
    assert cli.main(["validate", str(path)]) == 0
    doc = yaml.safe_load(path.read_text())
    record = {"name": "Maria Lopez", "age": 34, "city": "Seville", "occupation": "nurse"}
    answers = {"Read the text": json.dumps(record), "Here is a record": "Maria Lopez is a nurse in Seville."}
    doc["model"] = {"name": "m", "backend": "mock", "options": {"answers": answers}}
    result = Workflow.from_dict(doc, source=str(path)).run(
        text="Maria Lopez, 34, is a nurse in Seville.", cache=False
    )
    assert result.outputs == {"record": record, "summary": "Maria Lopez is a nurse in Seville."}
    assert json.dumps(record) in result.nodes["summary"].prompt[-1]["content"]
    answers["Read the text"] = json.dumps({**record, "age": "34"})
    [failed] = list(Workflow.from_dict(doc, source=str(path)).run_many([{"text": "Maria"}], cache=False))
    assert (
        failed.error is not None
        and failed.error.node == "record"
        and "'34' is not of type 'integer'" in failed.error.message
    )


# -- onnxruntime-genai ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def causal_export(tiny_causal_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ift_engine.onnx.export import export_model

    out = tmp_path_factory.mktemp("exports") / "causal"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's ONNX tracer warnings
        export_model(tiny_causal_dir, out)
    return out


def test_genai_rows_with_different_constraints_fit_and_match_pytorch(
    causal_export: Path, tiny: HFCausalLM
) -> None:
    from ift_engine.onnx.backend import OnnxModel, OnnxOptions

    onnx = OnnxModel.load("ort", str(causal_export), OnnxOptions(device="cpu", batch_size=8))
    settings = GenerationSettings(max_new_tokens=60)
    together, alone = mixed_batch(onnx, settings)
    for index, (completion, constraint) in enumerate(zip(together, constraints())):
        assert_fits(completion, constraint, index)
    assert [c.text for c in together] == [c.text for c in alone]
    reference, _ = mixed_batch(tiny, settings)
    assert [c.text for c in together] == [c.text for c in reference]


# -- the service ------------------------------------------------------------------------------------


def test_response_format_on_chat_completions_and_json_types_in_run_outputs(tiny_causal_dir: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ift_engine.serve import ServeConfig, create_app

    tiny = extract_flow({"name": str(tiny_causal_dir), "options": {"device": "cpu"}})
    mock = {
        **extract_flow(
            {"name": "m", "backend": "mock", "options": {"default": '{"name": "Ann", "age": 41}'}}
        ),
        "name": "m",
    }
    workflows = {doc["name"]: Workflow.from_dict(doc) for doc in (tiny, mock)}
    base = {
        "model": str(tiny_causal_dir),
        "messages": [{"role": "user", "content": "Describe Ann."}],
        "max_tokens": 60,
    }
    with TestClient(create_app(ServeConfig(cache=False), workflows)) as client:
        schema = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
        reply = client.post("/v1/chat/completions", json={**base, "response_format": schema}).json()
        jsonschema.validate(json.loads(reply["choices"][0]["message"]["content"]), PERSON)
        assert reply["choices"][0]["finish_reason"] == "stop"
        anything = client.post(
            "/v1/chat/completions", json={**base, "response_format": {"type": "json_object"}}
        ).json()
        assert isinstance(json.loads(anything["choices"][0]["message"]["content"]), dict)
        streamed = client.post(
            "/v1/chat/completions", json={**base, "response_format": schema, "stream": True}
        ).text
        chunks = [json.loads(line[6:]) for line in streamed.splitlines() if line.startswith("data: {")]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == reply["choices"][0]["message"]["content"]
        for bad, message in (
            (
                {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "objekt"}}},
                "not a valid JSON Schema",
            ),
            ({"type": "json_schema"}, "needs json_schema"),
        ):
            response = client.post("/v1/chat/completions", json={**base, "response_format": bad})
            assert response.status_code == 400 and message in response.json()["error"]["message"], (
                response.text
            )
            assert response.json()["error"]["param"] == "response_format"
        workflow = client.post(
            "/v1/chat/completions", json={**base, "model": "x", "response_format": {"type": "json_object"}}
        )
        assert workflow.status_code == 400 and "applies to models" in workflow.json()["error"]["message"]
        run = client.post("/v1/workflows/m/run", json={"inputs": {"text": "Ann"}}).json()
        assert run["outputs"] == {"record": {"name": "Ann", "age": 41}}


def test_schema_true_allows_any_json_and_false_is_refused(capsys, tmp_path) -> None:
    assert json_constraint(True).accepts('{"a": [1, 2]}')
    line = validate_error(capsys, tmp_path, extract_flow(MOCK, False))
    assert "field 'schema': the schema false allows no answer at all" in line
