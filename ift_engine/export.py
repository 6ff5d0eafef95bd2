"""ONNX export (optimum ``main_export``), optional weight quantisation, and a parity check
against PyTorch that is printed and stored in the export's ``ift_model.json``."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from .errors import IftError, ModelError
from .files import check_output_folder, move_into_place, staging_folder
from .models.chat import encode_chats
from .models.ort import ONNX_FILE, OnnxOptions, load_ort
from .models.resolve import MANIFEST, cache_home, infer_backend

log = logging.getLogger(__name__)

Quantize = Literal["int8", "int4"]
TASKS = {"hf-causal": "text-generation-with-past", "hf-classifier": "text-classification"}
PROBES: tuple[str, ...] = (
    "Write an outline for a short article about how honeybees communicate.",
    "Is this review positive or negative? The room was dirty and the staff were rude.",
    "用一句话概括：今天的天气很好，我们去公园散步了。",
    "List three uses of copper.",
)
#: Largest fp32 logit difference accepted; ONNX Runtime's fused kernels stay well below it.
FP32_ATOL = 1e-3
#: Part of the cache key of exports made on first use: bump when quantisation settings change.
QUANTIZER_VERSION = 2


class ExportError(IftError):
    """The export failed or its outputs disagree with PyTorch."""


def merge_lora(folder: Path, into: Path) -> Path:
    """A LoRA adapter folder merged into its base model (ONNX wants plain weights)."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    AutoPeftModelForCausalLM.from_pretrained(folder).merge_and_unload().save_pretrained(into)
    AutoTokenizer.from_pretrained(folder).save_pretrained(into)
    return into


def quantize_onnx(source: Path, target: Path, method: Quantize) -> None:
    """Dynamic int8 (weights and activations of MatMuls) or 4-bit weight-only (MatMulNBits)."""
    if method == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        # accuracy_level 4 lets ONNX Runtime compute in int8 on x86 CPUs: about 1.6x faster
        # decode than fp32 compute for SmolLM2-135M here, with the same weights.
        quantizer = MatMulNBitsQuantizer(
            str(source), bits=4, block_size=32, is_symmetric=True, accuracy_level=4
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), False)


def _left_padded(tokenizer: Any, prompts: Sequence[str]) -> dict[str, Any]:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return dict(encode_chats(tokenizer, [[{"role": "user", "content": p}] for p in prompts]))


def causal_parity(reference: Any, candidate: Any, tokenizer: Any, new_tokens: int = 16) -> dict[str, float]:
    """Max |logit difference| over the probe prompts (padding excluded), and the share of
    greedy tokens that agree position by position over ``new_tokens`` steps."""
    import torch

    enc = _left_padded(tokenizer, PROBES)
    mask = enc["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        want = reference(**enc, position_ids=positions).logits.float()
        got = candidate(**enc, position_ids=positions).logits.float()
        diff = (want - got).abs()[mask.bool()].max().item()
        settings = dict(
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        length = enc["input_ids"].shape[1]
        ids_want = reference.generate(**enc, **settings)[:, length:]
        ids_got = candidate.generate(**enc, **settings)[:, length:]
    agreement = (ids_want == ids_got).float().mean().item()
    return {"max_abs_logit_diff": diff, "greedy_agreement": agreement, "probes": len(PROBES)}


def classifier_parity(reference: Any, candidate: Any, tokenizer: Any) -> dict[str, float]:
    """Max |logit difference| and the share of probe texts given the same label."""
    import torch

    enc = tokenizer(list(PROBES), return_tensors="pt", padding=True, truncation=True)
    with torch.inference_mode():
        want = reference(**enc).logits.float()
        got = candidate(**enc).logits.float()
    return {
        "max_abs_logit_diff": (want - got).abs().max().item(),
        "label_agreement": (want.argmax(-1) == got.argmax(-1)).float().mean().item(),
        "probes": len(PROBES),
    }


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an ONNX export made by ``export_model`` (its manifest says so)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("backend") == "onnx" and "parity" in manifest


def check_export_target(out: str | Path, source: str | Path | None = None, overwrite: bool = False) -> None:
    """Refuse an ``out`` that export may not fill, before any work (see ``check_output_folder``)."""
    check_output_folder(
        Path(out),
        "ONNX export",
        is_previous=is_export,
        overwrite=overwrite,
        protected=(Path(source),) if source is not None and Path(source).exists() else (),
    )


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
    the folder holds the quantised model, and the manifest reports both parities.
    """
    source, out = Path(source), Path(out)
    check_export_target(out, source, overwrite)
    backend = backend or infer_backend(source) or "hf-causal"
    if backend not in TASKS:
        raise ExportError(f"cannot export a '{backend}' model: ONNX export supports {', '.join(TASKS)}")
    work = staging_folder(out, "exporting")
    try:
        final, manifest = _export_into(work, source, backend, quantize, device, atol)
        check_export_target(out, source, overwrite)  # nothing appeared there meanwhile
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
) -> tuple[Path, dict[str, Any]]:
    """Export, check and (optionally) quantise inside ``work``; the finished folder and manifest."""
    from optimum.exporters.onnx import main_export
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    weights = source
    if (source / "adapter_config.json").exists():
        log.info("merging the LoRA adapter in %s before export", source)
        weights = merge_lora(source, work / "merged")
    fp32 = work / "fp32"
    log.info("exporting %s to ONNX (%s)", source, TASKS[backend])
    main_export(str(weights), fp32, task=TASKS[backend], device=device, do_validation=False)

    loader = AutoModelForSequenceClassification if backend == "hf-classifier" else AutoModelForCausalLM
    reference = loader.from_pretrained(weights).eval()
    tokenizer = AutoTokenizer.from_pretrained(weights)
    check = classifier_parity if backend == "hf-classifier" else causal_parity
    task = "text-classification" if backend == "hf-classifier" else "text-generation"
    (fp32 / MANIFEST).write_text(json.dumps({"backend": "onnx", "task": task}))
    options = OnnxOptions(device=device)
    parity = {"fp32": check(reference, load_ort(fp32, options)[0], tokenizer)}
    log.info("fp32 parity: %s", parity["fp32"])
    if parity["fp32"]["max_abs_logit_diff"] > atol:
        raise ExportError(
            f"ONNX export of {source} disagrees with PyTorch: max |logit diff| "
            f"{parity['fp32']['max_abs_logit_diff']:.2e} > {atol:.0e}; re-export with another "
            "opset, or pass a larger --atol if you accept it"
        )
    final = fp32
    if quantize:
        final = work / quantize
        shutil.copytree(fp32, final, ignore=shutil.ignore_patterns("*.onnx", "*.onnx_data"))
        log.info("quantising to %s", quantize)
        quantize_onnx(fp32 / ONNX_FILE, final / ONNX_FILE, quantize)
        parity[quantize] = check(reference, load_ort(final, options)[0], tokenizer)
        log.info("%s parity: %s", quantize, parity[quantize])
    manifest = {
        "backend": "onnx",
        "task": task,
        "source": str(source),
        "source_backend": backend,
        "quantize": quantize,
        "parity": parity,
    }
    (final / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return final, manifest


def export_cached(source: str, quantize: Quantize | None = None) -> Path:
    """The export of ``source`` in the cache, made on first use (a workflow node that asks for
    ``backend: onnx`` on a PyTorch folder)."""
    path = Path(source)
    if not path.is_dir():
        raise ModelError(f"backend 'onnx' needs a local model folder to export, not {source!r}")
    stamp = (path / "config.json").stat().st_mtime_ns if (path / "config.json").exists() else 0
    digest = hashlib.sha256(f"{path.resolve()}:{stamp}:{quantize}:{QUANTIZER_VERSION}".encode()).hexdigest()[
        :12
    ]
    target = cache_home() / "onnx" / f"{path.name}-{quantize or 'fp32'}-{digest}"
    if not is_export(target):
        export_model(path, target, quantize=quantize, overwrite=True)
    return target
