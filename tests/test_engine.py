"""One ``Engine`` holds a program's components and model pool; nothing is process-wide."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import pytest
from test_pool import FLOW as POOL_FLOW
from test_pool import Closing as Counting

from ift_engine import Engine, IftError, Workflow, WorkflowError
from ift_engine.models.mock import MockModel
from ift_engine.models.resolve import ModelSpec
from ift_engine.plugin import InstructionTemplate, build_plugin_manager, hookimpl
from ift_engine.plugins import Components, installed_components

# The pool tests' one-node workflow on a model named "mine", and their mock that counts closes.
FLOW = {**POOL_FLOW, "name": "outline"}


def test_workflows_of_one_engine_share_its_models_and_close_with_it():
    model = Counting("mine", default="- one\n- two")
    with Engine() as engine:
        engine.pool.add("mine", model)
        first = engine.workflow(FLOW)
        second = engine.workflow({**FLOW, "name": "again"})
        assert first.pool is second.pool is engine.pool
        assert first.run(topic="bees", cache=False)["outline"] == ["one", "two"]
        assert second.run(topic="ants", cache=False)["outline"] == ["one", "two"]
        assert len(model.calls) == 2  # the one model answered both workflows
        first.close()  # a workflow leaves the engine's pool to the engine
        assert model.closed == 0
    assert model.closed == 1


def test_engines_share_nothing():
    one, two = Engine(), Engine()
    one.pool.add("mine", MockModel("mine", default="- from one"))
    two.pool.add("mine", MockModel("mine", default="- from two"))
    assert one.components is not two.components
    assert one.workflow(FLOW).run(topic="x", cache=False)["outline"] == ["from one"]
    assert two.workflow(FLOW).run(topic="x", cache=False)["outline"] == ["from two"]
    # Nothing is cached for the process: each call reads the installed plugins afresh.
    assert installed_components() is not installed_components()


class Haiku:
    @hookimpl
    def register_templates(self, register):
        register(
            InstructionTemplate(
                name="haiku-en", task="haiku", paraphrases=("A haiku on {topic}",), variables=("topic",)
            )
        )


def test_an_engine_over_components_of_its_own():
    pm = build_plugin_manager(load_entry_points=False)
    pm.register(Haiku(), name="haiku")
    engine = Engine(Components.from_plugin_manager(pm))
    engine.pool.add("mine", MockModel("mine", default="An old pond"))
    flow = {**FLOW, "nodes": [{"id": "poem", "template": "haiku-en", "inputs": {"topic": "$input.topic"}}]}
    assert engine.workflow(flow).run(topic="frogs", cache=False)["poem"] == "An old pond"
    assert "haiku-en" not in Engine().components.templates  # the installed plugins do not have it


def test_a_workflow_built_without_an_engine_owns_its_pool(monkeypatch):
    closed: list[str] = []
    monkeypatch.setattr(MockModel, "close", lambda self: closed.append(self.name))
    flow = {**FLOW, "model": {"name": "own", "backend": "mock", "options": {"default": "- one"}}}
    with Workflow.from_dict(flow) as workflow:
        assert workflow.run(topic="bees", cache=False)["outline"] == ["one"]
        assert closed == []
    assert closed == ["own"]


def test_an_evaluation_uses_the_engine_models():
    model = Counting("judge", answers={"great": "positive", "rude": "negative"})
    engine = Engine()
    engine.pool.add("judge", model)
    records = [{"text": "great hotel", "output": "positive"}, {"text": "rude staff", "output": "negative"}]
    result = engine.evaluate({"data": {"records": records}, "template": "sentiment-en", "models": ["judge"]})
    assert all(row.scores["accuracy"] == 1.0 for row in result.models[0].paraphrases)
    assert model.calls  # the handed-in model answered, and stays the engine's after the evaluation
    assert engine.pool.get(ModelSpec(name="judge")) is model and model.closed == 0
    engine.close()
    assert model.closed == 1


def test_the_service_runs_on_the_engine_it_is_given_and_leaves_it_open(tmp_path):
    pytest.importorskip("fastapi")
    import yaml
    from fastapi.testclient import TestClient

    from ift_engine.serve import ServeConfig, create_app

    (tmp_path / "outline.yaml").write_text(yaml.safe_dump(FLOW))
    model = Counting("mine", default="- served")
    engine = Engine()
    engine.pool.add("mine", model)
    with TestClient(create_app(ServeConfig(paths=[str(tmp_path)], cache=False), engine=engine)) as client:
        response = client.post("/v1/workflows/outline/run", json={"inputs": {"topic": "bees"}})
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["outline"] == ["served"]
    assert model.closed == 0  # the engine's owner closes it, not the service
    assert engine.workflow(FLOW).run(topic="ants", cache=False)["outline"] == ["served"]
    engine.close()
    assert model.closed == 1
    with pytest.raises(TypeError, match="workflows or an engine, not both"):
        create_app(ServeConfig(paths=[str(tmp_path)]), {}, engine=Engine())


@pytest.mark.integration
def test_the_readme_engine_example_runs(capsys):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = readme.index("```python\nfrom ift_engine import Engine, MockModel")
    code = readme[start + len("```python\n") : readme.index("```\n", start + 10)]
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].strip() and printed[-1] == "['Moon', 'Sea']"


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_a_workflow_dropped_unclosed_releases_its_model_and_worker(monkeypatch):
    closed: list[str] = []
    monkeypatch.setattr(MockModel, "close", lambda self: closed.append(self.name))
    flow = {**FLOW, "model": {"name": "dropped", "backend": "mock", "options": {"default": "- one"}}}

    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "ift-model:dropped"]

    workflow = Workflow.from_dict(flow)
    assert workflow.run(topic="bees", cache=False)["outline"] == ["one"]
    assert len(workers()) == 1
    del workflow
    gc.collect()
    assert _wait_for(lambda: closed == ["dropped"] and not workers())
    # A runner keeps its pool: a workflow dropped at once still runs through it.
    runner = Workflow.from_dict(flow).runner(cache=False)
    gc.collect()
    assert runner.run({"topic": "ants"}).outputs["outline"] == ["one"]


def test_a_closed_engine_refuses_new_workflows():
    engine = Engine()
    engine.close()
    with pytest.raises(IftError, match="this engine is closed"):
        engine.workflow(FLOW)


def test_ray_refuses_a_model_handed_in_from_code():
    engine = Engine()
    engine.pool.add("mine", MockModel("mine", default="- one"))
    with pytest.raises(WorkflowError, match="model 'mine' was handed in with pool.add and cannot go to Ray"):
        engine.workflow(FLOW).executor("ray")
