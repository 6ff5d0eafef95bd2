"""ONNX Runtime sessions for exported models: options, execution provider, loading.

Shared by the ``onnx`` backend (``models/onnx.py``) and the export's parity check (``export.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ModelError
from .resolve import MANIFEST

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ONNX_FILE = "model.onnx"


class OnnxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(8, ge=1, description="most prompts in one forward pass")
    threads: int = Field(0, ge=0, description="CPU intra-op threads; 0 lets ONNX Runtime choose")
    quantize: Literal["int8", "int4"] | None = Field(
        None, description="when exporting on first use: quantise the weights"
    )


def pick_provider(device: str) -> str:
    """``auto`` takes CUDA when a GPU is present; ``cuda`` without one is an error.

    onnxruntime-gpu lists the CUDA provider even on machines without a GPU, so the GPU itself
    is asked for through torch.
    """
    import onnxruntime
    import torch

    has_cuda = CUDA in onnxruntime.get_available_providers() and torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise ModelError(
            "device 'cuda' was asked for but ONNX Runtime has no usable CUDA provider "
            f"(providers: {', '.join(onnxruntime.get_available_providers())}; GPU present: "
            f"{torch.cuda.is_available()}); install onnxruntime-gpu on a CUDA machine or use device: cpu"
        )
    return CUDA if device == "cuda" or (device == "auto" and has_cuda) else CPU


def is_onnx_export(folder: Path) -> bool:
    return (folder / ONNX_FILE).exists()


def load_ort(folder: Path, options: OnnxOptions) -> tuple[Any, str]:
    """The optimum ORTModel for an export folder, and its task ("text-generation" or
    "text-classification"); fails loudly if CUDA was asked for and the session fell back."""
    import onnxruntime
    from optimum.onnxruntime import ORTModelForCausalLM, ORTModelForSequenceClassification

    manifest = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).exists() else {}
    task = manifest.get("task", "text-generation")
    provider = pick_provider(options.device)
    session = onnxruntime.SessionOptions()
    if options.threads:
        session.intra_op_num_threads = options.threads
    cls = ORTModelForSequenceClassification if task == "text-classification" else ORTModelForCausalLM
    model = cls.from_pretrained(
        folder, provider=provider, session_options=session, use_io_binding=provider == CUDA
    )
    if provider == CUDA and CUDA not in model.providers:
        raise ModelError(f"ONNX Runtime could not start CUDA for {folder} (providers: {model.providers})")
    return model, task
