"""The ``onnx`` backend: models exported to ONNX (``ift export``) and served by ONNX Runtime.

The ONNX models are drop-in replacements for the transformers ones (optimum's ``ORTModel``
classes implement ``forward`` and ``generate``), so generation, scoring and classification are
the PyTorch backends' own code. A folder that holds no ONNX export yet is exported on first use
into the cache, once, by ``prepare`` (the pool calls it while resolving the model, as it converts
GGUF files), so ``load`` only loads.
"""

from __future__ import annotations

from pathlib import Path

from .base import Model
from .hf_causal import HFCausalLM
from .hf_classifier import HFClassifier
from .ort import CPU, CUDA, ONNX_FILE, OnnxOptions, is_onnx_export, load_ort, pick_provider


class OnnxCausalLM(HFCausalLM):
    backend = "onnx"


class OnnxClassifier(HFClassifier):
    backend = "onnx"


class OnnxModel(Model):
    """Registered as ``onnx``; ``load`` returns an ``OnnxCausalLM`` or ``OnnxClassifier``."""

    backend = "onnx"
    options_model = OnnxOptions

    @classmethod
    def prepare(cls, source: str, options: OnnxOptions) -> str:
        """A folder that holds no ONNX export yet (a PyTorch model) is exported into the cache on
        first use, once; the export is what ``load`` reads."""
        if is_onnx_export(Path(source)):
            return source
        from ..export import export_cached

        return str(export_cached(source, options.quantize))

    @classmethod
    def load(cls, name: str, source: str, options: OnnxOptions) -> Model:
        from transformers import AutoTokenizer

        model, task = load_ort(Path(source), options)
        tokenizer = AutoTokenizer.from_pretrained(source)
        if task == "text-classification":
            return OnnxClassifier(name, model, tokenizer, options.batch_size)
        return OnnxCausalLM(name, model, tokenizer, options.batch_size)


__all__ = [
    "CPU",
    "CUDA",
    "ONNX_FILE",
    "OnnxCausalLM",
    "OnnxClassifier",
    "OnnxModel",
    "OnnxOptions",
    "load_ort",
    "pick_provider",
]
