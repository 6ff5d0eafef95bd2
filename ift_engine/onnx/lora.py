"""LoRA on onnxruntime-genai: a base export whose LoRA weights are inputs, and adapter files.

Given ``adapter_path``, onnxruntime-genai's model builder builds each adapted MatMul as a base
MatMul plus a LoRA_A -> LoRA_B branch, but with the adapter's weights as constants: loading an
adapter file then fails (``og.Adapters``: "Invalid input name: model.layers.0.attn.q_proj.lora_A.
MatMul.weight"). So the engine turns those weights into graph inputs that default to zeros (a
generator with no adapter runs the bare base), with the rank a free dimension, and writes each
adapter as an ONNX Runtime adapter file holding its values for those inputs (``lora_B`` scaled
as peft scales it). Quantised exports keep the LoRA MatMuls in fp32 (``nodes_to_exclude``):
quantised, their weights could not be inputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import IftError
from ..models.adapters import read_adapter_config

MODEL_FILE = "model.onnx"
#: Written beside the graph: each LoRA input's shape (what adapter files are checked against).
LORA_INPUTS = "lora_inputs.json"
#: A graph input for LoRA weights: model.layers.N.<block>.<module>.lora_A.MatMul.weight
GRAPH_NAME = re.compile(r"layers\.(\d+)\..*?([^.]+)\.(lora_[AB])\.MatMul\.weight$")
#: A peft weight: base_model.model.model.layers.N.<block>.<module>.lora_A.weight
PEFT_NAME = re.compile(r"layers\.(\d+)\..*?([^.]+)\.(lora_[AB])\.weight$")
#: The rank, left free so adapters of every rank fit one export.
RANK = "lora_rank"


class LoraExportError(IftError):
    """An adapter that the ONNX export cannot carry."""


def lora_layout(adapter: Path) -> dict[str, Any]:
    """What an export's LoRA inputs depend on: the adapted modules and layers (not the rank).
    Adapters the LoRA branches cannot express are refused here, in one line."""
    config = read_adapter_config(adapter)
    if config.get("peft_type") != "LORA":
        raise LoraExportError(
            f"{adapter}: only LoRA adapters export to ONNX (this is {config.get('peft_type')})"
        )
    for field, why in (
        ("use_dora", "DoRA"),
        ("modules_to_save", "fully trained modules"),
        ("rank_pattern", "per-module ranks"),
        ("alpha_pattern", "per-module alphas"),
    ):
        if config.get(field):
            raise LoraExportError(f"{adapter}: adapters with {why} ({field}) do not export to ONNX")
    targets = config.get("target_modules")
    return {
        "targets": sorted(targets) if isinstance(targets, list) else targets,
        "layers": config.get("layers_to_transform"),
    }


def builder_options(adapter: Path | None, fp32: Path) -> list[str]:
    """The builder's extra options for a base export with LoRA branches shaped as ``adapter``'s;
    when the fp32 graph exists (it is built first), its LoRA MatMuls are kept from quantisation."""
    if adapter is None:
        return []
    options = [f"adapter_path={adapter}"]
    if (fp32 / MODEL_FILE).exists():
        import onnx

        graph = onnx.load(fp32 / MODEL_FILE, load_external_data=False).graph
        nodes = [n.name for n in graph.node if n.op_type == "MatMul" and re.search(r"/lora_[AB]/", n.name)]
        options.append(f"nodes_to_exclude={','.join(nodes)}")
    return options


def open_lora_inputs(folder: Path) -> dict[str, list[Any]]:
    """Turn the LoRA weights of the export in ``folder`` into zero-valued graph inputs; return
    each input's shape (the rank as ``RANK``)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    path = folder / MODEL_FILE
    model = onnx.load(path)
    shapes: dict[str, list[Any]] = {}
    for initializer in model.graph.initializer:
        if not GRAPH_NAME.search(initializer.name):
            continue
        weight = numpy_helper.to_array(initializer)
        initializer.CopyFrom(numpy_helper.from_array(np.zeros_like(weight), initializer.name))
        rows, columns = weight.shape
        shape = [rows, RANK] if ".lora_A." in initializer.name else [RANK, columns]
        model.graph.input.append(
            helper.make_tensor_value_info(initializer.name, initializer.data_type, shape)
        )
        shapes[initializer.name] = shape
    if not shapes:
        raise LoraExportError(f"{folder}: the builder made no LoRA branches; is the adapter for this model?")
    for stale in folder.glob(f"{MODEL_FILE}*"):
        stale.unlink()
    onnx.save(model, path, save_as_external_data=True, location=f"{MODEL_FILE}.data")
    (folder / LORA_INPUTS).write_text(json.dumps(shapes, indent=2))
    return shapes


def _graph_names(shapes: dict[str, list[Any]]) -> dict[tuple[str | Any, ...], str]:
    """(layer, module, lora_A|lora_B) -> the export's input name."""
    names: dict[tuple[str | Any, ...], str] = {}
    for name in shapes:
        match = GRAPH_NAME.search(name)
        if match is None or match.groups() in names:
            raise LoraExportError(f"the export's LoRA input {name} cannot be told apart from another")
        names[match.groups()] = name
    return names


def adapter_values(adapter: Path, shapes: dict[str, list[Any]]) -> dict[str, Any]:
    """The adapter's weights as the export's inputs want them (transposed; ``lora_B`` times
    peft's scaling), every input covered and every size checked."""
    from safetensors.numpy import load_file

    config = read_adapter_config(adapter)
    rank, alpha = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
    scaling = alpha / rank**0.5 if config.get("use_rslora") else alpha / rank
    names = _graph_names(shapes)
    values: dict[str, Any] = {}
    for key, weight in load_file(str(adapter / "adapter_model.safetensors")).items():
        match = PEFT_NAME.search(key)
        target = names.get(match.groups()) if match else None
        if target is None:
            raise LoraExportError(f"{adapter}: its weight {key} has no LoRA input in the base export")
        value = weight.T.astype("float32") * (scaling if match and match.group(3) == "lora_B" else 1.0)
        wanted = shapes[target]
        if len(value.shape) != 2 or any(w not in (RANK, v) for w, v in zip(wanted, value.shape)):
            raise LoraExportError(
                f"{adapter}: {key} has shape {list(weight.shape)}; the base export wants {wanted} "
                "(transposed): is the adapter for this base?"
            )
        values[target] = value.copy(order="C")
    missing = sorted(set(shapes) - set(values))
    if missing:
        raise LoraExportError(f"{adapter}: adapts fewer modules than the base export ({missing[0]} missing)")
    return values


def write_adapter_file(adapter: Path, shapes: dict[str, list[Any]], path: Path) -> None:
    """The adapter as an ONNX Runtime adapter file (what ``og.Adapters.load`` reads)."""
    import onnxruntime

    fmt = onnxruntime.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    values = adapter_values(adapter, shapes)
    fmt.set_parameters({name: onnxruntime.OrtValue.ortvalue_from_numpy(v) for name, v in values.items()})
    fmt.export_adapter(str(path))
