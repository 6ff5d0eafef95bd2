"""ONNX Runtime for exported sequence classifiers: options, execution provider, sessions.

Shared by the ``onnx`` backend (``onnx/backend.py``) and the export's parity check
(``onnx/parity.py``). Exported causal LMs run on onnxruntime-genai instead (``models/genai.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ModelError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ONNX_FILE = "model.onnx"
#: Weight formats of ``ift export --quantize`` (the causal LM builder's and the classifier's).
Quantize = Literal["int4", "int8", "fp16"]


class OnnxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(16, ge=1, description="most prompts decoded together")
    max_batch_tokens: int | None = Field(
        None, ge=1, description="most tokens (prompt + max_new_tokens) the rows decoded together reserve"
    )
    threads: int = Field(0, ge=0, description="CPU intra-op threads; 0 lets ONNX Runtime choose")
    quantize: Quantize | None = Field(
        None, description="when exporting on first use: the weight format (fp32 if unset)"
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


@dataclass
class Logits:
    logits: Any


class OrtClassifierModule:
    """An exported classifier with the call interface of its transformers model
    (``module(**encoded).logits``), so ``HFClassifier`` runs it unchanged."""

    device = "cpu"  # inputs stay on the CPU; ONNX Runtime copies them where it runs

    def __init__(self, folder: Path, options: OnnxOptions) -> None:
        import onnxruntime
        from transformers import AutoConfig

        provider = pick_provider(options.device)
        settings = onnxruntime.SessionOptions()
        if options.threads:
            settings.intra_op_num_threads = options.threads
        self.session = onnxruntime.InferenceSession(
            str(folder / ONNX_FILE), settings, providers=[provider, CPU] if provider == CUDA else [CPU]
        )
        if provider == CUDA and CUDA not in self.session.get_providers():
            raise ModelError(
                f"ONNX Runtime could not start CUDA for {folder} (providers: {self.session.get_providers()})"
            )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.config = AutoConfig.from_pretrained(folder)

    def __call__(self, **encoded: Any) -> Logits:
        import numpy as np
        import torch

        feed = {name: np.asarray(encoded[name].cpu(), dtype=np.int64) for name in self.inputs}
        return Logits(torch.from_numpy(self.session.run(["logits"], feed)[0]))
