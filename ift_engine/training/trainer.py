"""``train``: records + templates + augmenters -> a fine-tuned model folder, with metrics.

Built on transformers ``Trainer`` and peft LoRA, so the same code runs under ``torchrun`` or
``accelerate launch`` on several GPUs or machines, resumes from checkpoints, and shows progress.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..documents import load_yaml_file
from ..errors import TrainError
from ..models.torch_thread import run_on_torch_thread
from ..plugins import Components, installed_components
from ..records import DataError
from ..validation import validate_document
from .output import RunFolder
from .run import TrainResult, run_training
from .spec import TrainSpec


def load_train_spec(path: str | Path) -> TrainSpec:
    path = Path(path)
    data = load_yaml_file(path, "training file", TrainError)
    return validate_document(TrainSpec, data, str(path), TrainError)


def build_spec(config: TrainSpec | Mapping[str, Any] | str | Path | None = None, **fields: Any) -> TrainSpec:
    """A ``TrainSpec`` from a spec, a mapping or a YAML file, with ``fields`` over it."""
    if isinstance(config, (str, Path)):
        spec = load_train_spec(config)
        if fields:
            spec = validate_document(TrainSpec, {**spec.model_dump(), **fields}, str(config), TrainError)
        return spec
    data = config.model_dump() if isinstance(config, TrainSpec) else dict(config or {})
    return validate_document(TrainSpec, {**data, **fields}, "<train>", TrainError)


def train(
    config: TrainSpec | Mapping[str, Any] | str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    components: Components | None = None,
    **fields: Any,
) -> TrainResult:
    """Fine-tune a model. ``config`` is a ``TrainSpec``, a mapping, or a YAML file path; keyword
    fields build or override it (``train(base_model=..., output=..., datasets=[{"records":
    [...], "template": "sentiment-zh"}])``). ``resume`` continues an interrupted run of the
    same spec; ``overwrite`` replaces a previous trained model in ``output`` (see
    ``training.output``). ``components``: the templates, sources and models to use (default:
    the registered plugins')."""
    spec = build_spec(config, **fields)
    folder = RunFolder(spec, resume=resume, overwrite=overwrite)
    with folder.lock():
        folder.check()
        try:
            return run_on_torch_thread(
                run_training, spec, folder, progress, components or installed_components()
            )
        except DataError as exc:
            folder.abandon()
            raise TrainError(str(exc)) from None
        except BaseException:
            folder.abandon()
            raise
