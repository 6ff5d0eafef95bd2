"""Declared model capabilities: checked when a class is defined, asked before a model is used."""

from __future__ import annotations

import math

import pytest

from ift_engine import Model, ModelError
from ift_engine.models.mock import MockModel
from ift_engine.models.worker import ModelWorker, WorkerModel


class Scorer(Model):
    backend = "scorer"
    capabilities = frozenset({"score"})

    @classmethod
    def load(cls, name, source, options):
        return cls(name)

    def score(self, prompts, choices, mean=False):
        return [[-1.0 * (i + 1) for i, _ in enumerate(choices)] for _ in prompts]


class Nothing(Model):
    backend = "nothing"

    @classmethod
    def load(cls, name, source, options):
        return cls(name)


def test_a_scorer_classifies_by_a_softmax_of_its_scores():
    model = Scorer("s")
    assert model.can("score") and model.can("classify") and not model.can("generate")
    rows = model.classify([[{"role": "user", "content": "x"}]], ["a", "b", "c"])
    weights = [math.exp(-1), math.exp(-2), math.exp(-3)]
    assert rows[0] == pytest.approx([w / sum(weights) for w in weights])


def test_a_model_declaring_nothing_can_do_nothing():
    model = Nothing("n")
    assert not any(model.can(c) for c in ("generate", "stream", "score", "classify", "steps", "members"))
    with pytest.raises(ModelError, match="cannot classify"):
        model.classify([[{"role": "user", "content": "x"}]], ["a"])


def test_an_unknown_capability_fails_when_the_class_is_defined():
    with pytest.raises(TypeError, match=r"unknown \['clasify'\]"):

        class Typo(Model):  # noqa: F841 - defining it is the test
            backend = "typo"
            capabilities = frozenset({"clasify"})

            @classmethod
            def load(cls, name, source, options):
                return cls(name)


def test_a_declared_capability_without_its_method_fails_when_the_class_is_defined():
    with pytest.raises(TypeError, match=r"declares 'steps' but defines no start_decoding\(\)"):

        class Promises(Model):  # noqa: F841
            backend = "promises"
            capabilities = frozenset({"generate", "steps"})

            @classmethod
            def load(cls, name, source, options):
                return cls(name)

            def generate(self, prompts, settings):
                return ["x" for _ in prompts]


def test_a_worker_view_passes_on_what_its_calls_can_do():
    worker = ModelWorker(MockModel("m"))
    try:
        view = WorkerModel.of(worker)
        assert view.can("generate") and view.can("classify")
        assert not view.can("stream") and not view.can("steps")
    finally:
        worker.close()


def test_a_model_that_declares_nothing_but_defines_methods_is_read_from_them_with_a_warning():
    with pytest.warns(DeprecationWarning, match=r"add capabilities = frozenset\(\['generate', 'score'\]\)"):

        class Old(Model):
            backend = "old"

            @classmethod
            def load(cls, name, source, options):
                return cls(name)

            def generate(self, prompts, settings):
                return ["x" for _ in prompts]

            def score(self, prompts, choices, mean=False):
                return [[0.0 for _ in choices] for _ in prompts]

    assert Old("o").can("generate") and Old("o").can("classify") and not Old("o").can("stream")
