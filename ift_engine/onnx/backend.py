"""The ``onnx`` backend: models exported by ``ift export`` and run by ONNX Runtime.

A causal LM export runs on onnxruntime-genai (``GenaiCausalLM``); a classifier export on an
ONNX Runtime session behind the PyTorch classifier's own code. A folder that holds no export yet
(a PyTorch model) is exported on first use into the cache, once, by ``prepare`` (the pool calls
it while resolving the model, as it converts GGUF files), so ``load`` only loads.
"""

from __future__ import annotations

from pathlib import Path

from ..models.adapters import adapter_base, infer_adapter
from ..models.base import Model
from ..models.genai import GenaiCausalLM, is_genai_export
from ..models.hf_classifier import HFClassifier
from ..models.ort import CPU, CUDA, ONNX_FILE, OnnxOptions, OrtClassifierModule, is_onnx_export, pick_provider


class OnnxClassifier(HFClassifier):
    backend = "onnx"


class OnnxModel(Model):
    """Registered as ``onnx``; ``load`` returns a ``GenaiCausalLM`` or an ``OnnxClassifier``."""

    backend = "onnx"
    options_model = OnnxOptions
    structured_outputs = True  # causal LM exports (a classifier export does not generate)
    serves_adapters = True  # causal LM exports, through og.Adapters

    @classmethod
    def prepare_adapter(cls, adapter: Path, options: OnnxOptions) -> tuple[str | None, Path]:
        """A PyTorch adapter is exported on first use, once (its base once for all its
        adapters); an exported adapter is loaded on the base export its manifest names."""
        if infer_adapter(adapter) != "onnx":
            from .export import export_cached

            on_gpu = pick_provider(options.device) == CUDA
            adapter = export_cached(str(adapter), options.quantize, "cuda" if on_gpu else "cpu")
        return adapter_base(adapter), adapter

    @classmethod
    def prepare(cls, source: str, options: OnnxOptions) -> str:
        """A folder that holds no ONNX export yet (a PyTorch model) is exported into the cache on
        first use, once; the export is what ``load`` reads."""
        if is_onnx_export(Path(source)):
            return source
        from .export import export_cached

        on_gpu = pick_provider(options.device) == CUDA
        return str(export_cached(source, options.quantize, "cuda" if on_gpu else "cpu"))

    @classmethod
    def load(cls, name: str, source: str, options: OnnxOptions) -> Model:
        from transformers import AutoTokenizer

        folder = Path(source)
        if is_genai_export(folder):
            return GenaiCausalLM.load(name, source, options)
        module = OrtClassifierModule(folder, options)
        return OnnxClassifier(name, module, AutoTokenizer.from_pretrained(source), options.batch_size)


__all__ = [
    "CPU",
    "CUDA",
    "ONNX_FILE",
    "GenaiCausalLM",
    "OnnxClassifier",
    "OnnxModel",
    "OnnxOptions",
    "pick_provider",
]
