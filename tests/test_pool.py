"""The model pool: models handed in from code, and every model released when it closes."""

from __future__ import annotations

import pytest

from ift_engine import ModelError, Workflow, WorkflowError
from ift_engine.models.mock import MockModel
from ift_engine.models.resolve import ModelPool
from ift_engine.plugins import components

FLOW = {
    "name": "handed-in",
    "inputs": {"topic": {}},
    "model": "mine",
    "nodes": [{"id": "outline", "template": "outline-en", "inputs": {"topic": "$input.topic"}}],
}


class Closing(MockModel):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.closed = 0
        self.calls_after_close = 0

    def generate(self, prompts, settings):
        if self.closed:
            self.calls_after_close += 1
        return super().generate(prompts, settings)

    def close(self) -> None:
        self.closed += 1


def test_a_model_handed_to_the_pool_answers_the_nodes_that_name_it_and_is_closed_with_it():
    pool = ModelPool(components())
    model = Closing("mine", default="- one\n- two")
    pool.add("mine", model)
    workflow = Workflow.from_dict(FLOW, pool=pool)
    result = workflow.run({"topic": "bees"}, cache=False)
    assert result["outline"] == ["one", "two"]
    assert [call.method for call in model.calls] == ["generate"]
    pool.close()
    assert model.closed == 1 and model.calls_after_close == 0
    pool.close()  # closing twice releases nothing twice
    assert model.closed == 1


def test_a_name_is_handed_in_once():
    pool = ModelPool(components())
    pool.add("mine", MockModel("mine"))
    with pytest.raises(ModelError, match="already holds a model named 'mine'"):
        pool.add("mine", MockModel("mine"))


def test_closing_the_pool_releases_a_loaded_torch_model(tiny_causal_dir):
    from ift_engine.models.resolve import ModelSpec

    pool = ModelPool(components())
    spec = ModelSpec(name=str(tiny_causal_dir), options={"device": "cpu"})
    model = pool.get(spec)
    assert pool.worker(spec).generate([[{"role": "user", "content": "hi"}]], _settings()).result()
    pool.close()
    assert not hasattr(model, "model")  # the weights are dropped


def _settings():
    from ift_engine.models.base import GenerationSettings

    return GenerationSettings(max_new_tokens=2)


def test_a_closed_pool_refuses_to_hand_out_models():
    pool = ModelPool(components())
    pool.add("mine", MockModel("mine", default="- one"))
    workflow = Workflow.from_dict(FLOW, pool=pool)
    pool.close()
    with pytest.raises(WorkflowError, match="node 'outline', field 'model': the model pool is closed"):
        workflow.run({"topic": "bees"}, cache=False)
    with pytest.raises(ModelError, match="the model pool is closed"):
        pool.add("other", MockModel("other"))
