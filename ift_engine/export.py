"""ONNX export with a parity check against PyTorch, printed and stored in ``ift_model.json``.

Causal LMs are built by onnxruntime-genai's model builder (fused attention, a KV cache laid out
for its decoding loop; fp32, fp16 or int4 weights) and run on onnxruntime-genai. Sequence
classifiers are exported by ``torch.onnx`` and optionally quantised (int8, or int4 MatMulNBits).
optimum-onnx did both before; it requires transformers<4.58 and its LLM export measured no
faster than transformers on a CPU, so it went.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from .errors import IftError, ModelError
from .files import (
    OutputLock,
    check_output_folder,
    move_into_place,
    read_json_mapping,
    staging_folder,
    write_manifest,
)
from .models.chat import chat_ids
from .models.ort import ONNX_FILE, OnnxOptions, OrtClassifierModule, Quantize
from .models.resolve import MANIFEST, cache_home, infer_backend

log = logging.getLogger(__name__)

#: The weight formats each kind of model can be exported to, besides fp32.
FORMATS: dict[str, tuple[str, ...]] = {
    "hf-causal": ("fp16", "int8", "int4"),
    "hf-classifier": ("int8", "int4"),
}
PROBES: tuple[str, ...] = (
    "Write an outline for a short article about how honeybees communicate.",
    "Is this review positive or negative? The room was dirty and the staff were rude.",
    "用一句话概括：今天的天气很好，我们去公园散步了。",
    "List three uses of copper.",
)
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


def merge_lora(folder: Path, into: Path) -> Path:
    """A LoRA adapter folder merged into its base model (ONNX wants plain weights)."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    AutoPeftModelForCausalLM.from_pretrained(folder).merge_and_unload().save_pretrained(into)
    AutoTokenizer.from_pretrained(folder).save_pretrained(into)
    return into


def die_with_parent() -> None:
    """In a child process, before it runs: have the kernel kill it when the engine dies, even by
    ``kill -9`` (Linux; elsewhere the child may outlive a killed engine)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def build_causal(weights: Path, out: Path, precision: str, device: str, tokenizer: Any) -> None:
    """onnxruntime-genai's model builder, run as the command it is (its Python entry point
    wants options only its own argument parser prepares); its log goes to a file beside."""
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(weights)]
    command += ["-o", str(out), "-p", precision, "-e", device, "-c", str(out.parent / "builder-cache")]
    if precision == "int4":
        command += ["--extra_options", *INT4_RECIPE]
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


def causal_parity(
    reference: Any, folder: Path, tokenizer: Any, device: str, new_tokens: int = 16
) -> dict[str, float]:
    """How closely the export follows PyTorch on the probe prompts, each followed by PyTorch's
    ``new_tokens`` greedy tokens: the largest |logit difference| over every position; the share
    of those continuation tokens the export also ranks first (teacher-forced, so one early
    difference does not decide the rest); and the share of greedy tokens that agree position by
    position when each model decodes on its own."""
    import torch

    from .models.genai import GenaiCausalLM
    from .models.hf_causal import HFCausalLM

    candidate = GenaiCausalLM.load("export", str(folder), OnnxOptions(device=device))
    chats = [[{"role": "user", "content": p}] for p in PROBES]
    # A copy: HFCausalLM may give the tokenizer a pad token, and exports save it as the source had it.
    reference_lm = HFCausalLM("reference", reference, copy.deepcopy(tokenizer))
    with torch.inference_mode():
        continuations = _greedy(reference_lm, chats, new_tokens)
        own = _greedy(candidate, chats, new_tokens)
        prompts = [chat_ids(tokenizer, chat) for chat in chats]
        rows = [p + c for p, c in zip(prompts, continuations)]
        got = candidate.prompt_logits(rows)
        diff, top1 = 0.0, []
        for index, (ids, prompt) in enumerate(zip(rows, prompts)):
            want = reference(torch.tensor([ids], device=reference.device)).logits[0].float().cpu()
            diff = max(diff, (want - got[index, : len(ids)]).abs().max().item())
            predicted = got[index, len(prompt) - 1 : len(ids) - 1].argmax(-1)
            top1 += (predicted == torch.tensor(ids[len(prompt) :])).tolist()
    greedy = [a == b for want, mine in zip(continuations, own) for a, b in zip(want, mine)]
    return {
        "max_abs_logit_diff": diff,
        "top1_agreement": sum(top1) / len(top1),
        "greedy_agreement": sum(greedy) / len(greedy),
        "probes": len(PROBES),
    }


def _greedy(model: Any, chats: Sequence[Any], steps: int) -> list[list[int]]:
    """``steps`` greedy tokens for each chat, end of turn included (no early stop)."""
    decoding = model.start_decoding(chats)
    rows: list[list[int]] = [[] for _ in chats]
    for _ in range(steps):
        chosen = decoding.logits().argmax(-1).tolist()
        for row, token in zip(rows, chosen):
            row.append(token)
        decoding.advance(chosen)
    return rows


def classifier_parity(reference: Any, folder: Path, tokenizer: Any, device: str) -> dict[str, float]:
    """Max |logit difference| and the share of probe texts given the same label."""
    import torch

    candidate = OrtClassifierModule(folder, OnnxOptions(device=device))
    enc = tokenizer(list(PROBES), return_tensors="pt", padding=True, truncation=True)
    with torch.inference_mode():
        want = reference(**enc).logits.float()
        got = candidate(**enc).logits.float()
    return {
        "max_abs_logit_diff": (want - got).abs().max().item(),
        "label_agreement": (want.argmax(-1) == got.argmax(-1)).float().mean().item(),
        "probes": len(PROBES),
    }


def export_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of an ONNX export made by ``export_model`` in ``folder``, else None."""
    manifest = read_json_mapping(folder / MANIFEST)
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
) -> dict[str, Any]:
    """``export_model`` once ``out``'s lock is held."""
    check_export_target(out, source, overwrite)  # as it is now that no other export can change it
    work = staging_folder(out, "exporting")
    try:
        final, manifest = _export_into(work, source, backend, quantize, device, atol)
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
) -> tuple[Path, dict[str, Any]]:
    """Export, check and (optionally) convert inside ``work``; the finished folder and manifest."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    weights = source
    if (source / "adapter_config.json").exists():
        log.info("merging the LoRA adapter in %s before export", source)
        weights = merge_lora(source, work / "merged")
    causal = backend == "hf-causal"
    loader = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
    reference = loader.from_pretrained(weights).eval()
    tokenizer = AutoTokenizer.from_pretrained(weights)

    def build(folder: Path, precision: str) -> dict[str, float]:
        log.info("exporting %s to ONNX (%s)", source, precision)
        if causal:
            build_causal(weights, folder, precision, device, tokenizer)
            return causal_parity(reference, folder, tokenizer, device)
        if precision == "fp32":
            build_classifier(weights, folder, reference, tokenizer)
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
    return final, write_manifest(final, MANIFEST, manifest)


def export_cached(
    source: str, quantize: Quantize | None = None, device: Literal["cpu", "cuda"] = "cpu"
) -> Path:
    """The export of ``source`` for ``device`` in the cache, made on first use (a workflow node
    that asks for ``backend: onnx`` on a PyTorch folder)."""
    path = Path(source)
    if not path.is_dir():
        raise ModelError(f"backend 'onnx' needs a local model folder to export, not {source!r}")
    stamp = (path / "config.json").stat().st_mtime_ns if (path / "config.json").exists() else 0
    key = f"{path.resolve()}:{stamp}:{quantize}:{device}:{EXPORTER_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    target = cache_home() / "onnx" / f"{path.name}-{quantize or 'fp32'}-{device}-{digest}"
    if is_export(target):
        return target
    backend = infer_backend(path) or "hf-causal"
    check_format(backend, quantize, device)
    with OutputLock(target, "ONNX export", wait=True):  # another process may be making it
        if not is_export(target):
            _export_locked(path, target, backend, quantize, device, FP32_ATOL, overwrite=True)
    return target
