"""ONNX export with a parity check against PyTorch, printed and stored in ``ift_model.json``.

Causal LMs are built by onnxruntime-genai's model builder (fused attention, a KV cache laid out
for its decoding loop; fp32, fp16 or int4 weights) and run on onnxruntime-genai. Sequence
classifiers are exported by ``torch.onnx`` and optionally quantised (int8, or int4 MatMulNBits).
optimum-onnx did both before; it requires transformers<4.58 and its LLM export measured no
faster than transformers on a CPU, so it went.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ..errors import IftError, ModelError
from ..files import (
    OutputLock,
    check_output_folder,
    files_fingerprint,
    move_into_place,
    staging_folder,
    write_manifest,
)
from ..models.adapters import ONNX_ADAPTER_FILE, adapter_base, check_base, is_adapter_folder
from ..models.manifest import MANIFEST, read_manifest
from ..models.ort import ONNX_FILE, Quantize
from ..models.resolve import cache_home, infer_backend
from .lora import LORA_INPUTS, builder_options, lora_layout, open_lora_inputs, write_adapter_file
from .parity import PROBES, causal_parity, classifier_parity

log = logging.getLogger(__name__)

#: The weight formats each kind of model can be exported to, besides fp32.
FORMATS: dict[str, tuple[str, ...]] = {
    "hf-causal": ("fp16", "int8", "int4"),
    "hf-classifier": ("int8", "int4"),
}
#: int4 as llama.cpp's Q4_K_M does it: k-quant 4-bit weights, with the output head and the most
#: quantisation-sensitive layers in int8. On the sentiment-tuned SmolLM2 the builder's plain int4
#: lost 19 points of label accuracy against fp32, this recipe 3 (examples/sentiment_zh/REPORT.md).
INT4_RECIPE = ("algo_config=k_quant_mixed",)
#: Largest fp32 logit difference accepted; ONNX Runtime's fused kernels stay well below it.
FP32_ATOL = 1e-3
#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1
#: Part of the cache key of exports made on first use: bump when the export's settings change.
EXPORTER_VERSION = 4


class ExportError(IftError):
    """The export failed or its outputs disagree with PyTorch."""


def die_with_parent() -> None:
    """In a child process, before it runs: have the kernel kill it when the engine dies, even by
    ``kill -9`` (Linux; elsewhere the child may outlive a killed engine)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def build_causal(
    weights: Path, out: Path, precision: str, device: str, tokenizer: Any, extra: Sequence[str] = ()
) -> None:
    """onnxruntime-genai's model builder, run as the command it is (its Python entry point
    wants options only its own argument parser prepares), with ``extra`` options; its log goes
    to a file beside."""
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(weights)]
    command += ["-o", str(out), "-p", precision, "-e", device, "-c", str(out.parent / "builder-cache")]
    options = [*(INT4_RECIPE if precision == "int4" else ()), *extra]
    if options:
        command += ["--extra_options", *options]
    log_file = out.parent / f"builder-{precision}.log"
    with log_file.open("w") as sink:
        done = subprocess.run(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C goes to the engine, which stops the builder
            preexec_fn=die_with_parent,
        )
    if done.returncode != 0:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
        raise ExportError(
            f"onnxruntime-genai's model builder could not export {weights} to {precision}: "
            f"{lines[-1] if lines else f'exit {done.returncode}'}; is the architecture one it supports?"
        )
    # The engine feeds ids from its own tokenizer: keep it exactly as the source had it.
    tokenizer.save_pretrained(out)


def build_classifier(weights: Path, out: Path, reference: Any, tokenizer: Any) -> None:
    """``torch.onnx`` (dynamo) with dynamic batch and sequence axes, plus config and tokenizer."""
    import torch

    example = tokenizer(list(PROBES[:2]), return_tensors="pt", padding=True)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in example]
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    out.mkdir(parents=True)
    torch.onnx.export(
        reference,
        (),
        str(out / ONNX_FILE),
        kwargs={name: example[name] for name in names},
        input_names=names,
        output_names=["logits"],
        dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
        dynamo=True,
        external_data=False,
    )
    reference.config.save_pretrained(out)
    tokenizer.save_pretrained(out)


def quantize_classifier(source: Path, target: Path, method: str) -> None:
    """Dynamic int8 (weights and activations of MatMuls) or 4-bit weight-only (MatMulNBits)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.onnx", "*.onnx.data"))
    if method == "int8":
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # The quantiser re-infers shapes; the exporter's recorded ones carry the example's batch.
        model = onnx.load(source / ONNX_FILE)
        del model.graph.value_info[:]
        quantize_dynamic(model, target / ONNX_FILE, weight_type=QuantType.QInt8)
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(
            str(source / ONNX_FILE), bits=4, block_size=32, is_symmetric=True, accuracy_level=4
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(target / ONNX_FILE), False)


def export_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of an ONNX export made by ``export_model`` in ``folder``, else None."""
    manifest = read_manifest(folder)
    return manifest if manifest and manifest.get("backend") == "onnx" and "parity" in manifest else None


def is_export(folder: Path) -> bool:
    return export_manifest(folder) is not None


def check_export_target(out: str | Path, source: str | Path | None = None, overwrite: bool = False) -> None:
    """Refuse an ``out`` that export may not fill, before any work (see ``check_output_folder``)."""
    check_output_folder(
        Path(out),
        "ONNX export",
        previous=export_manifest,
        overwrite=overwrite,
        protected=(Path(source),) if source is not None and Path(source).exists() else (),
    )


def check_export_arguments(model: str, atol: float, device: str) -> None:
    """Refuse, when the command starts, what would otherwise fail after minutes of work (or,
    for a NaN tolerance, pass every parity check)."""
    if not model.strip():
        raise ExportError("the model to export is empty: give an alias, a model folder or a .gguf file")
    if not 0 <= atol < math.inf:  # NaN compares false with everything
        raise ExportError(f"--atol {atol}: give a finite tolerance of 0 or more (default {FP32_ATOL:g})")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ExportError("--device cuda: no CUDA GPU is available here; export with --device cpu")


def check_format(backend: str, quantize: str | None, device: str) -> None:
    if backend not in FORMATS:
        raise ExportError(f"cannot export a '{backend}' model: ONNX export supports {', '.join(FORMATS)}")
    if quantize is not None and quantize not in FORMATS[backend]:
        raise ExportError(
            f"--quantize {quantize}: a {backend} model exports to fp32 or {' or '.join(FORMATS[backend])}"
        )
    if quantize == "fp16" and device != "cuda":
        # the builder's fp16 CPU graph fails in ONNX Runtime 1.31, and CPUs gain nothing from fp16
        raise ExportError("--quantize fp16 is for GPUs: add --device cuda, or use fp32 or int4 on a CPU")


def export_model(
    source: str | Path,
    out: str | Path,
    *,
    backend: str | None = None,
    quantize: Quantize | None = None,
    device: Literal["cpu", "cuda"] = "cpu",
    atol: float = FP32_ATOL,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a model folder to ONNX in ``out``; return the manifest written there.

    The export is built in a temporary sibling of ``out`` and renamed into place only when it
    and its parity check succeed: a failed or killed export leaves ``out`` as it was. ``out``
    must be new or empty, or (with ``overwrite``) hold a previous export; the source folder is
    never a valid ``out``. The fp32 export must match PyTorch within ``atol``. With ``quantize``
    the folder holds the model in that format, and the manifest reports both parities.
    """
    source, out = Path(source), Path(out)
    check_export_arguments(str(source), atol, device)
    check_export_target(out, source, overwrite)
    backend = backend or infer_backend(source) or "hf-causal"
    check_format(backend, quantize, device)
    with OutputLock(out, "ONNX export"):  # a second export to ``out`` fails at once
        return _export_locked(source, out, backend, quantize, device, atol, overwrite)


def _export_locked(
    source: Path,
    out: Path,
    backend: str,
    quantize: Quantize | None,
    device: Literal["cpu", "cuda"],
    atol: float,
    overwrite: bool,
    lora: Path | None = None,
) -> dict[str, Any]:
    """``export_model`` once ``out``'s lock is held."""
    check_export_target(out, source, overwrite)  # as it is now that no other export can change it
    work = staging_folder(out, "exporting")
    try:
        final, manifest = _export_into(work, source, backend, quantize, device, atol, lora)
        check_export_target(out, source, overwrite)  # nothing of the user's appeared there meanwhile
        move_into_place(final, out)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _export_into(
    work: Path,
    source: Path,
    backend: str,
    quantize: Quantize | None,
    device: Literal["cpu", "cuda"],
    atol: float,
    lora: Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Export, check and (optionally) convert inside ``work``; the finished folder and manifest.
    ``lora``: a causal LM built with LoRA inputs shaped as that adapter's (``lora.py``)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if is_adapter_folder(source):
        return _export_adapter_into(work, source, quantize, device, atol)
    causal = backend == "hf-causal"
    loader = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
    reference = loader.from_pretrained(source).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)

    def build(folder: Path, precision: str) -> dict[str, float]:
        log.info("exporting %s to ONNX (%s)", source, precision)
        if causal:
            build_causal(source, folder, precision, device, tokenizer, builder_options(lora, work / "fp32"))
            if lora is not None:
                open_lora_inputs(folder)
            return causal_parity(reference, folder, tokenizer, device)
        if precision == "fp32":
            build_classifier(source, folder, reference, tokenizer)
        else:
            quantize_classifier(work / "fp32", folder, precision)
        return classifier_parity(reference, folder, tokenizer, device)

    parity = {"fp32": build(work / "fp32", "fp32")}
    log.info("fp32 parity: %s", parity["fp32"])
    if parity["fp32"]["max_abs_logit_diff"] > atol:
        raise ExportError(
            f"ONNX export of {source} disagrees with PyTorch: max |logit diff| "
            f"{parity['fp32']['max_abs_logit_diff']:.2e} > {atol:.0e}; pass a larger --atol if you accept it"
        )
    final = work / (quantize or "fp32")
    if quantize:
        parity[quantize] = build(final, quantize)
        log.info("%s parity: %s", quantize, parity[quantize])
    manifest = {
        "backend": "onnx",
        "task": "text-generation" if causal else "text-classification",
        "runtime": "onnxruntime-genai" if causal else "onnxruntime",
        "device": device,
        "source": str(source),
        "source_backend": backend,
        "quantize": quantize,
        "parity": parity,
    }
    if lora is not None:
        manifest["lora"] = lora_layout(lora)
    return final, write_manifest(final, MANIFEST, manifest)


def _export_adapter_into(
    work: Path, adapter: Path, quantize: Quantize | None, device: Literal["cpu", "cuda"], atol: float
) -> tuple[Path, dict[str, Any]]:
    """A LoRA adapter: its base exported once with LoRA inputs (into the export cache, shared by
    every adapter of that shape), and the adapter as an ``og.Adapters`` file with its manifest,
    checked against the merged PyTorch model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..models.resolve import ModelPool, ModelSpec
    from ..plugins import installed_components

    base = adapter_base(adapter)
    base_folder = Path(ModelPool(installed_components()).locate(ModelSpec(name=base)))
    check_base(adapter, base, base_folder)
    base_export = export_cached(str(base_folder), quantize, device, lora=adapter)
    final = work / "adapter"
    final.mkdir()
    shapes = json.loads((base_export / LORA_INPUTS).read_text())
    write_adapter_file(adapter, shapes, final / ONNX_ADAPTER_FILE)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder), str(adapter))
    reference = merged.merge_and_unload().eval()
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    variant = quantize or "fp32"
    parity = {variant: causal_parity(reference, base_export, tokenizer, device, adapter=final)}
    log.info("%s parity of the adapter: %s", variant, parity[variant])
    if variant == "fp32" and parity["fp32"]["max_abs_logit_diff"] > atol:
        raise ExportError(
            f"ONNX export of the adapter {adapter} disagrees with PyTorch: max |logit diff| "
            f"{parity['fp32']['max_abs_logit_diff']:.2e} > {atol:.0e}; pass a larger --atol if you accept it"
        )
    manifest = {
        "backend": "onnx",
        "task": "text-generation",
        "runtime": "onnxruntime-genai",
        "device": device,
        "source": str(adapter),
        "source_backend": "hf-causal",
        "quantize": quantize,
        "adapter": {"base": base, "base_export": str(base_export)},
        "parity": parity,
    }
    return final, write_manifest(final, MANIFEST, manifest)


def export_cached(
    source: str,
    quantize: Quantize | None = None,
    device: Literal["cpu", "cuda"] = "cpu",
    lora: Path | None = None,
) -> Path:
    """The export of ``source`` for ``device`` in the cache, made on first use (a workflow node
    that asks for ``backend: onnx`` on a PyTorch folder or adapter), keyed on the fingerprint of
    its files: a retrained model or adapter is exported anew. ``lora``: the base built with LoRA
    inputs shaped as that adapter's."""
    path = Path(source)
    if not path.is_dir():
        raise ModelError(f"backend 'onnx' needs a local model folder to export, not {source!r}")
    shape = json.dumps(lora_layout(lora), sort_keys=True) if lora is not None else ""
    key = f"{path.resolve()}:{files_fingerprint(path)}:{quantize}:{device}:{shape}:{EXPORTER_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    kind = "-lora" if lora is not None else ""
    target = cache_home() / "onnx" / f"{path.name}{kind}-{quantize or 'fp32'}-{device}-{digest}"
    if is_export(target):
        return target
    backend = infer_backend(path) or "hf-causal"
    check_format(backend, quantize, device)
    with OutputLock(target, "ONNX export", wait=True):  # another process may be making it
        if not is_export(target):
            _export_locked(path, target, backend, quantize, device, FP32_ATOL, overwrite=True, lora=lora)
    return target
