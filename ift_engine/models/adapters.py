"""LoRA adapters as models: references, the checks made before loading, and one adapter's view
of the base model that serves it.

A workflow names an adapter as ``{base: MODEL, adapter: FOLDER}`` or as the adapter folder
alone (its base read from the ``ift_model.json`` that ``ift train`` wrote, else from peft's
``adapter_config.json``). Every adapter of one base is loaded into that base's one model and
worker: a row carries the name of its adapter, so rows of several adapters (and of the bare
base) share decode steps where the backend can (PyTorch, through peft's mixed-adapter batches)
and are grouped by adapter where it cannot (onnxruntime-genai applies one adapter per
generator).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import ModelError
from ..files import read_json_mapping
from .base import DecodesSteps, DecodingSteps, GenerationSettings, Model, Prompt, StreamingModel, TextSink
from .decoding import BatchesContinuously, decode_to_end
from .manifest import MANIFEST, read_manifest

ADAPTER_CONFIG = "adapter_config.json"
#: The adapter file of an ONNX adapter export (``ift export`` of an adapter), for ``og.Adapters``.
ONNX_ADAPTER_FILE = "adapter.onnx_adapter"
#: The base model's config fields an adapter depends on (recorded when it is trained).
SHAPE_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


class AdapterError(ModelError):
    """A bad adapter reference; ``field`` is the part of the model spec at fault (``adapter``
    or ``base``)."""

    def __init__(self, message: str, field: str = "adapter") -> None:
        super().__init__(message)
        self.field = field


def is_adapter_folder(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


def infer_adapter(folder: Path) -> str | None:
    """What kind of adapter a folder holds: ``peft`` (a PyTorch LoRA adapter), ``onnx`` (one
    exported by ``ift export``), or None."""
    if is_adapter_folder(folder):
        return "peft"
    return "onnx" if adapter_manifest(folder).get("base_export") else None


def read_adapter_config(folder: Path) -> dict[str, Any]:
    """peft's ``adapter_config.json`` of an adapter folder (empty when unreadable)."""
    return read_json_mapping(folder / ADAPTER_CONFIG) or {}


def adapter_manifest(folder: Path) -> dict[str, Any]:
    """The ``adapter`` section of the folder's ``ift_model.json`` (empty when there is none)."""
    manifest = read_manifest(folder) or {}
    section = manifest.get("adapter")
    return section if isinstance(section, dict) else {}


def check_adapter_folder(adapter: str) -> Path:
    """The adapter folder, or a one-line error when it is missing or holds no adapter."""
    folder = Path(adapter).expanduser()
    if not folder.is_dir():
        raise AdapterError(
            f"adapter '{adapter}' not found: the folder does not exist; give the folder `ift train` "
            "wrote with lora.merge: false"
        )
    if infer_adapter(folder) is None:
        raise AdapterError(
            f"adapter '{adapter}': the folder holds no LoRA adapter (no {ADAPTER_CONFIG}); give the folder "
            "`ift train` wrote with lora.merge: false"
        )
    return folder


def adapter_base(folder: Path) -> str:
    """The base an adapter folder names: its manifest's, else peft's ``base_model_name_or_path``."""
    section = adapter_manifest(folder)
    base = section.get("base_export") or section.get("base")
    if not base and is_adapter_folder(folder):
        base = read_adapter_config(folder).get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise AdapterError(
            f"adapter '{folder}': its base model is not recorded; name it as "
            f"{{base: MODEL, adapter: {folder}}}",
            "base",
        )
    return base


def shape_of(config: dict[str, Any]) -> dict[str, Any]:
    """What of a base model's ``config.json`` an adapter's weights depend on."""
    return {name: config.get(name) for name in SHAPE_FIELDS}


def check_base(folder: Path, base_name: str, base_folder: Path | None) -> None:
    """An adapter trained by ``ift train`` fits only the base it was trained on: the same shape
    (model type and sizes) and the same files (fingerprint). ``base_folder`` is None for a hub id
    (not read before loading)."""
    from ..files import files_fingerprint

    section = adapter_manifest(folder)
    if base_folder is None or not section:
        return
    trained = section.get("base_shape")
    config = read_json_mapping(base_folder / "config.json")
    if isinstance(trained, dict) and config is not None and shape_of(config) != trained:
        found = shape_of(config)
        differ = next(k for k in SHAPE_FIELDS if found.get(k) != trained.get(k))
        raise AdapterError(
            f"adapter '{folder}' was trained for a {trained.get('model_type')} model with {differ} "
            f"{trained.get(differ)}; base '{base_name}' has {found.get(differ)}: give the base it was "
            f"trained on ({section.get('base')})",
            "base",
        )
    fingerprint = section.get("base_fingerprint")
    if fingerprint and files_fingerprint(base_folder) != fingerprint:
        raise AdapterError(
            f"adapter '{folder}' was trained on other files than base '{base_name}' holds now (fingerprint "
            f"differs from the one in its {MANIFEST}); give the base it was trained on "
            f"({section.get('base')}) or train the adapter again",
            "base",
        )


def adapter_key(folder: Path) -> str:
    """The name an adapter is loaded under in its base model: one per folder."""
    return "adapter-" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]


@runtime_checkable
class ServesAdapters(BatchesContinuously, DecodesSteps, Protocol):
    """A causal LM that loads LoRA adapters beside its base weights and applies one per row
    (``Row.adapter``; None: the bare base). ``using_adapter`` sets the adapter that batched
    calls (scoring, step-by-step decoding) started inside it use."""

    adapters: set[str]

    def add_adapter(self, name: str, folder: Path) -> None:
        """Load the adapter in ``folder`` under ``name`` (nothing when already loaded)."""
        ...

    def using_adapter(self, name: str | None) -> AbstractContextManager[None]: ...


class SwitchesAdapters:
    """The ``using_adapter`` of a model that serves adapters: ``active`` is the adapter of calls
    made inside it (the worker runs one call at a time, so no lock is needed)."""

    active: str | None = None

    @contextmanager
    def using_adapter(self, name: str | None) -> Iterator[None]:
        previous, self.active = self.active, name
        try:
            yield
        finally:
            self.active = previous


class AdapterModel(StreamingModel):
    """One adapter seen as a model: every call runs on the shared base with the adapter applied.
    The pool hands it out for adapter specs; its worker is the base's (``AdapterWorker``)."""

    backend = "adapter"
    locates_weights = False

    def __init__(self, name: str, base: Any, adapter: str) -> None:
        super().__init__(name)
        self.base: Any = base
        if not isinstance(base, ServesAdapters):
            raise AdapterError(f"model '{self.base.name}' ({self.base.backend}) cannot apply LoRA adapters")
        self.adapter = adapter
        self.backend = self.base.backend  # type: ignore[misc]  # error messages name the real one
        self.tokenizer, self.stop_ids = self.base.tokenizer, self.base.stop_ids
        self.batch_size: int = self.base.batch_size
        self.capabilities = self.base.capabilities

    @classmethod
    def load(cls, name: str, source: str, options: Any) -> Model:  # pragma: no cover - built by the pool
        raise ModelError("an adapter is loaded by the pool, on its base")

    def check_labels(self, labels: Sequence[str]) -> None:
        self.base.check_labels(labels)

    def inference(self) -> AbstractContextManager[Any]:
        return self.base.inference()  # type: ignore[no-any-return]

    def _generate(
        self, prompts: Sequence[Prompt], settings: GenerationSettings, on_text: TextSink | None
    ) -> list[str]:
        with self.base.inference():
            rows = decode_to_end(self.base, prompts, settings, on_text, adapter=self.adapter)
        return [row.text() for row in rows]

    def score(
        self, prompts: Sequence[Prompt], choices: Sequence[str], mean: bool = False
    ) -> list[list[float]]:
        with self.base.using_adapter(self.adapter):
            return self.base.score(prompts, choices, mean)  # type: ignore[no-any-return]

    def start_decoding(self, prompts: Sequence[Prompt]) -> DecodingSteps:
        with self.base.using_adapter(self.adapter):
            return self.base.start_decoding(prompts)  # type: ignore[no-any-return]
