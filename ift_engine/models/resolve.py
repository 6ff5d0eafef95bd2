"""Model specs, where they point, and the one-model-per-spec pool.

A spec's ``name`` is, in this order: a registered alias, a local folder, a local GGUF file
(converted once into the cache), or a Hugging Face hub id (loaded by transformers; needs
network access to the hub).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ModelError
from ..validation import forbidding_extra
from .adapters import (
    AdapterError,
    AdapterModel,
    adapter_base,
    adapter_key,
    check_adapter_folder,
    check_base,
    infer_adapter,
)
from .base import Model
from .hub import resolve_hub_id
from .manifest import MANIFEST
from .torch_thread import on_torch_thread
from .worker import AdapterWorker, ModelWorker, Worker, WorkerModel, WorkerStats

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
log = logging.getLogger(__name__)


class ModelSpec(BaseModel):
    """Which model to load and how: ``name`` (alias, folder, GGUF file or hub id), ``backend``
    (inferred when left out) and backend ``options`` (device, dtype, batch size...). With
    ``adapter`` (a LoRA adapter folder), the model is that adapter on ``name``, which may also
    be written ``base``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    backend: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    adapter: str | None = Field(None, min_length=1, description="a LoRA adapter folder applied to the base")

    @model_validator(mode="before")
    @classmethod
    def _base_is_the_name(cls, value: Any) -> Any:
        if not isinstance(value, dict) or "base" not in value:
            return value
        if "name" in value:
            raise ValueError("give 'base' or 'name', not both")
        return {("name" if key == "base" else key): item for key, item in value.items()}

    def key(self) -> str:
        # A spec without an adapter keys as it did before adapters existed (cached answers stay).
        dumped = self.model_dump(mode="json", exclude={"adapter"} if self.adapter is None else set())
        return json.dumps(dumped, sort_keys=True)

    def base(self) -> ModelSpec:
        """The model the adapter is applied to (the spec itself when it names none)."""
        return self.model_copy(update={"adapter": None})


class EnsembleSpec(BaseModel):
    """Several models combined by a registered ensembler: ``{ensemble: soft_vote, members:
    [...], weights: [...]}``. A member is a name under the workflow's ``models:``, a model name,
    or a model spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ensemble: str = Field(
        min_length=1, description="soft_vote, logit_mean, hard_vote, token_average, rerank, ..."
    )
    members: tuple[Annotated[str, Field(min_length=1)] | ModelSpec, ...] = Field(min_length=1)
    weights: tuple[float, ...] | None = None

    @property
    def name(self) -> str:
        names = [m if isinstance(m, str) else m.name for m in self.members]
        return f"{self.ensemble}({', '.join(names)})"

    def key(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def check_weights(weights: Sequence[float], members: int) -> None:
    if len(weights) != members:
        raise ModelError(f"{len(weights)} weights for {members} members: give one weight per member")
    if any(not math.isfinite(w) or w < 0 for w in weights) or not 0 < sum(weights) < math.inf:
        raise ModelError("weights must be non-negative numbers with a positive, finite sum")


def cache_home() -> Path:
    return Path(os.environ.get("IFT_ENGINE_HOME", Path.home() / ".cache" / "ift_engine"))


@on_torch_thread
def convert_gguf(path: Path) -> Path:
    """Convert a GGUF file once into a transformers folder in the cache; return the folder.

    Reading GGUF dequantises every tensor (about 40 s for a 135M model); loading the saved
    folder afterwards takes under a second. The folder is written beside and renamed into
    place, so an interrupted conversion leaves nothing half-written.
    """
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = cache_home() / "models" / f"{path.stem}-{digest.hexdigest()[:12]}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from .hf_causal import generation_eos

    log.info("converting %s once into %s (about a minute; later loads take a second)", path.name, target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    except OSError as exc:
        raise ModelError(
            f"{target.parent}: cannot write the model cache ({exc.strerror}); set IFT_ENGINE_HOME to a "
            "writable folder"
        ) from None
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            # Dequantised into a plain model (the cache folder is an ordinary model folder): kept
            # in GGUF blocks, transformers 5 refuses to save it.
            model = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, quantization_config=GgufConfig(dequantize=True)
            )
        except Exception as exc:  # the GGUF reader raises many kinds on a damaged file
            raise ModelError(f"{path}: cannot read the GGUF model: {type(exc).__name__}: {exc}") from None
        # GGUF metadata can leave the tokenizer's eos at the turn-start marker; the model's
        # generation config knows the real end-of-sequence token.
        eos = generation_eos(model)
        if isinstance(eos, int) and tokenizer.eos_token_id != eos:
            tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / MANIFEST).write_text(
            json.dumps({"backend": "hf-causal", "converted_from": str(path)}, indent=2)
        )
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


#: Any of these makes a folder a model folder (an adapter folder has no config.json).
MODEL_FOLDER_FILES = ("config.json", "adapter_config.json", MANIFEST)


def read_json_object(path: Path) -> dict[str, Any]:
    """A model folder's JSON file (config, manifest) as a mapping; ``ModelError`` when it is not."""
    from ..documents import read_bytes

    data = read_bytes(path, "model file", ModelError)  # bounded: a device or FIFO is refused
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise ModelError(f"{path}: not valid JSON; restore the file or export the model again") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: must be a JSON object; restore the file or export the model again")
    return value


def check_model_folder(folder: Path) -> None:
    if not any((folder / name).is_file() for name in MODEL_FOLDER_FILES):
        raise ModelError(
            f"{folder}: the folder holds no model (none of {', '.join(MODEL_FOLDER_FILES)}); give the "
            "folder a model was saved or exported to"
        )
    for name in ("config.json", MANIFEST):
        if (folder / name).is_file():
            read_json_object(folder / name)


def check_gguf_file(path: Path) -> None:
    """A GGUF file starts with the bytes ``GGUF``."""
    try:
        with path.open("rb") as file:
            magic = file.read(4)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model file: {exc.strerror}") from None
    if magic != b"GGUF":
        raise ModelError(f"{path}: not a GGUF model file; give a .gguf file or a model folder")


def infer_backend(folder: Path) -> str | None:
    """The backend a model folder wants: from ``ift_model.json``, else its architecture."""
    manifest = folder / MANIFEST
    if manifest.exists():
        backend = read_json_object(manifest).get("backend")
        if backend:
            return str(backend)
    config = folder / "config.json"
    if config.exists():
        found = read_json_object(config).get("architectures")
        architectures = [a for a in found if isinstance(a, str)] if isinstance(found, list) else []
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            return "hf-classifier"
        if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
            return "hf-causal"
    return None


def _release(
    guard: threading.Lock, workers: dict[str, ModelWorker], models: dict[str, Model], added: dict[str, Any]
) -> None:
    """Stop every worker, after the work already submitted, then release every model."""
    with guard:
        stopping, loaded = list(workers.values()), list(models.values())
        workers.clear()
        models.clear()
        added.clear()
    for worker in reversed(stopping):  # an ensemble before its members, made before it
        worker.close()
    for model in reversed(loaded):
        model.close()


def _release_in_background(*held: Any) -> None:
    """``_release`` for a pool that was garbage-collected: on a thread of its own, as the
    collector may run in any thread (a model's worker included)."""
    threading.Thread(target=_release, args=held, name="ift-pool-release", daemon=True).start()


class ModelPool:
    """Loads each spec once and hands the same object to every node that uses it;
    ``worker(spec)`` is the one worker that runs it (see ``worker.py``). ``stats(name)`` makes
    the counters each new worker reports to (the service's metrics). ``close()`` stops the
    workers and releases the models; a pool that is garbage-collected unclosed does the same."""

    def __init__(self, components: Any, stats: Callable[[str], WorkerStats] | None = None) -> None:
        self.components = components
        self.stats = stats
        self._models: dict[str, Model] = {}
        self._added: dict[str, tuple[Model, str]] = {}  # handed in by add(): the model, a token
        self._workers: dict[str, ModelWorker] = {}
        self._bases: dict[str, str] = {}  # an adapter spec's key -> its base's key
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._closed = False
        # Worker threads hold their models, not the pool: a pool nobody holds any more (a
        # workflow built alone, then dropped) is collected, and this releases what it loaded.
        held = (self._guard, self._workers, self._models, self._added)
        self._release = weakref.finalize(self, _release_in_background, *held)
        self._release.atexit = False  # at exit the process ends; nothing needs stopping first

    def add(self, name: str, model: Model) -> None:
        """Hand the pool a model built in code: nodes whose model is ``name`` (the name alone)
        use it, as they would a loaded one (a test's own model, as httpx takes a
        ``MockTransport``). The pool closes it with the rest."""
        key = ModelSpec(name=name).key()
        with self._guard:
            self._check_open()
            if key in self._models:
                raise ModelError(f"the pool already holds a model named '{name}'")
            self._models[key] = model
            self._added[key] = (model, uuid.uuid4().hex)

    def added(self, spec: ModelSpec | EnsembleSpec) -> Model | None:
        """The model handed in with ``add`` under this spec, if any."""
        found = self._added.get(spec.key()) if isinstance(spec, ModelSpec) else None
        return found[0] if found else None

    def added_token(self, spec: ModelSpec) -> str | None:
        """A name that no other model handed in to any pool has: the answer cache's key for it."""
        found = self._added.get(spec.key())
        return found[1] if found else None

    @property
    def closed(self) -> bool:
        return self._closed

    def backend_for(self, spec: ModelSpec) -> type[Model]:
        """The backend class a spec uses, checked without loading anything."""
        added = self.added(spec)
        if added is not None:
            return type(added)
        backend = spec.backend
        aliases = self.components.model_aliases
        if backend is None and spec.name in aliases:
            backend = aliases.get(spec.name).backend
        if backend is None and Path(spec.name).is_dir():
            backend = infer_backend(Path(spec.name))
        backend = backend or "hf-causal"
        models = self.components.models
        if backend not in models:
            raise ModelError(f"unknown model backend '{backend}' (known: {models.known()})")
        return models.get(backend)

    def options_for(self, spec: ModelSpec) -> BaseModel:
        cls = self.backend_for(spec)
        try:
            return forbidding_extra(cls.options_model).model_validate(spec.options)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ModelError(
                f"model '{spec.name}' ({cls.backend}) option '{field}': {first['msg']}"
            ) from None

    def _where(self, spec: ModelSpec) -> tuple[str, str]:
        """What ``spec.name`` is ("alias", "folder", "gguf" or "hub") without preparing it;
        cheap checks of local files (a folder that holds a model, a file that is GGUF)."""
        aliases = self.components.model_aliases
        if spec.name in aliases:
            return "alias", spec.name
        path = Path(spec.name).expanduser()
        if path.is_dir():
            check_model_folder(path)
            return "folder", str(path)
        if path.is_file():
            check_gguf_file(path)
            return "gguf", str(path)
        if path.exists():
            raise ModelError(f"{path}: not a model folder or file")
        looks_local = spec.name.startswith((".", "/", "~")) or Path(spec.name.split("/")[0]).is_dir()
        if looks_local or not HUB_ID.match(spec.name):
            where = "folder or file does not exist" if looks_local else "name is not known"
            raise ModelError(
                f"model '{spec.name}' not found: the {where}; give a model folder, a .gguf file, "
                f"a hub id (owner/name) or a known alias ({aliases.known()})"
            )
        return "hub", spec.name

    def resolve(self, spec: ModelSpec) -> ModelSpec:
        """The spec with an adapter folder named alone read as ``{name: its base, adapter:
        folder}`` (the base from its manifest; the backend too, when the spec gives none)."""
        path = Path(spec.name).expanduser()
        if spec.adapter is not None or not path.is_dir() or infer_adapter(path) is None:
            return spec
        return ModelSpec(
            name=adapter_base(path),
            backend=spec.backend or infer_backend(path),
            options=spec.options,
            adapter=spec.name,
        )

    def check(self, spec: ModelSpec) -> None:
        """Validate a spec (backend, options, where it points, its adapter) without loading anything."""
        if self.added(spec) is not None:
            return
        spec = self.resolve(spec)
        if spec.adapter is not None:
            self._check_adapter(spec)
        if self.backend_for(spec).locates_weights:
            self._where(spec)
        self.options_for(spec)

    def _check_adapter(self, spec: ModelSpec) -> Path:
        """The adapter folder, checked: a backend that applies adapters, a folder that holds one,
        and a base that exists and is the one the adapter was trained on."""
        cls = self.backend_for(spec)
        if not cls.serves_adapters:
            raise AdapterError(f"backend '{cls.backend}' cannot apply LoRA adapters; use hf-causal or onnx")
        folder = check_adapter_folder(spec.adapter or "")
        try:
            kind, _ = self._where(spec.base())
            base_folder = None if kind == "hub" else Path(self.locate(spec.base()))
        except AdapterError:
            raise
        except ModelError as exc:
            raise AdapterError(str(exc), "base") from None
        check_base(folder, spec.name, base_folder)
        return folder

    def locate(self, spec: ModelSpec) -> str:
        """The folder or hub id that ``spec.name`` points to (converting a GGUF file once)."""
        kind, value = self._where(spec)
        if kind == "alias":
            return str(self.components.model_aliases.get(value).locate())
        if kind == "gguf":
            return str(convert_gguf(Path(value)))
        if kind == "hub":
            return resolve_hub_id(value)
        return value

    def check_ensemble(self, spec: EnsembleSpec) -> None:
        """Validate an ensemble (method, weights, members) without loading anything."""
        ensemblers = self.components.ensemblers
        if spec.ensemble not in ensemblers:
            raise ModelError(f"unknown ensemble method '{spec.ensemble}' (known: {ensemblers.known()})")
        if spec.weights is not None:
            check_weights(spec.weights, len(spec.members))
        for member in spec.members:
            self.check(member if isinstance(member, ModelSpec) else ModelSpec(name=member))

    def get(self, spec: ModelSpec | EnsembleSpec) -> Model:
        spec = self.resolve(spec) if isinstance(spec, ModelSpec) else spec
        key = spec.key()
        with self._guard:
            self._check_open()
            if key in self._models:
                return self._models[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # two nodes asking for one model at once load it once
            if key in self._models:
                return self._models[key]
            model = self._load(spec)
            with self._guard:
                closed = self._closed
                if not closed:
                    self._models[key] = model
            if closed:  # the pool closed while it loaded
                model.close()
                self._check_open()
            return model

    def worker(self, spec: ModelSpec | EnsembleSpec) -> Worker:
        """The worker of ``spec``'s model, loading it first if need be; for an adapter, its view
        of the base's worker."""
        model = self.get(spec)
        spec = self.resolve(spec) if isinstance(spec, ModelSpec) else spec
        key = spec.key()
        if isinstance(model, AdapterModel):
            base = self._workers[self._bases[key]]
            return AdapterWorker(base, model, model.adapter)
        with self._guard:
            self._check_open()
            if key not in self._workers:
                stats = self.stats(model.name) if self.stats else None
                self._workers[key] = ModelWorker(model, stats)
            return self._workers[key]

    def close(self) -> None:
        """Stop every worker, after the work already submitted, then release every model. A
        closed pool refuses to load or hand out a model."""
        with self._guard:
            self._closed = True
        held = self._release.detach()  # None once released: closing twice releases nothing twice
        if held is not None:
            _release(*held[2])

    def _check_open(self) -> None:
        if self._closed:
            raise ModelError(
                "the model pool is closed (its engine, workflow or service was closed); build a new Engine"
            )

    def _load(self, spec: ModelSpec | EnsembleSpec) -> Model:
        if isinstance(spec, EnsembleSpec):
            # Members are used through their workers: one owner each, even when shared.
            members = [
                WorkerModel.of(self.worker(m if isinstance(m, ModelSpec) else ModelSpec(name=m)))
                for m in spec.members
            ]
            ensembler = self.components.ensemblers.get(spec.ensemble)
            return ensembler(members, spec.weights).model(spec.name)
        if spec.adapter is not None:
            return self._load_adapter(spec)
        cls = self.backend_for(spec)
        options = self.options_for(spec)
        source = cls.prepare(self.locate(spec), options) if cls.locates_weights else spec.name
        return cls.load(spec.name, source, options)

    def _load_adapter(self, spec: ModelSpec) -> Model:
        """The adapter loaded into its base's model (loading the base once for all its
        adapters), seen as a model of its own."""
        folder = self._check_adapter(spec)
        cls = self.backend_for(spec)
        base_name, prepared = cls.prepare_adapter(folder, self.options_for(spec))
        base_spec = (
            spec.base()
            if base_name is None
            else ModelSpec(name=base_name, backend=spec.backend, options=spec.options)
        )
        worker = self.worker(base_spec)
        assert isinstance(worker, ModelWorker)  # a spec without adapter has a worker of its own
        view = AdapterModel(spec.adapter or "", worker.model, adapter_key(prepared))
        worker.run(lambda: view.base.add_adapter(view.adapter, prepared)).result()
        self._bases[spec.key()] = base_spec.key()
        return view
