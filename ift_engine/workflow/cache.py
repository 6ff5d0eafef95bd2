"""The on-disk answer cache: one JSON file per (node settings, prompt, model identity) key.

The key is a SHA-256 over everything that can change an answer: the rendered prompt (so the
template text and the inputs), the answer form, labels and parser, the generation settings, and
the model's identity (its spec and a fingerprint of its files). Files are written beside and
renamed into place, so concurrent processes (batch runs, Ray workers) never read half an entry.
A plain folder rather than sqlite or diskcache: entries are small, writes are rare next to model
calls, and there is nothing to lock or migrate.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..models.resolve import EnsembleSpec, ModelPool, ModelSpec, cache_home

KEY_VERSION = 1


def files_fingerprint(path: Path) -> str:
    """A digest of every file under ``path`` (name, size, modification time): a retrained or
    re-exported model gets a new fingerprint without hashing gigabytes of weights."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path) if file != path else file.name}:{stat.st_size}:".encode())
        digest.update(f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def model_identity(pool: ModelPool, spec: ModelSpec | EnsembleSpec) -> str:
    """The spec plus, for models with weights on disk, the fingerprint of their files."""
    if isinstance(spec, EnsembleSpec):
        members = [
            model_identity(pool, m if isinstance(m, ModelSpec) else ModelSpec(name=m)) for m in spec.members
        ]
        return json.dumps({"ensemble": spec.ensemble, "weights": spec.weights, "members": members})
    parts = {"spec": spec.key()}
    if pool.backend_for(spec).locates_weights:
        where = pool.locate(spec)
        parts["files"] = files_fingerprint(Path(where)) if Path(where).exists() else where  # hub id
    return json.dumps(parts, sort_keys=True)


class AnswerCache:
    """Answers on disk under ``folder`` (default: ``$IFT_ENGINE_CACHE``, else
    ``$IFT_ENGINE_HOME/answers``)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        default = os.environ.get("IFT_ENGINE_CACHE") or cache_home() / "answers"
        self.folder = Path(folder or default)

    @staticmethod
    def key(**parts: Any) -> str:
        text = json.dumps({"v": KEY_VERSION, **parts}, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(prefix=".", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(value, file, ensure_ascii=False)
        os.replace(staging, path)


CacheChoice = bool | str | Path | AnswerCache


def answer_cache(choice: CacheChoice) -> AnswerCache | None:
    """True: the default cache; a folder or an ``AnswerCache``: that one; False: none."""
    if isinstance(choice, AnswerCache):
        return choice
    if choice is True:
        return AnswerCache()
    return AnswerCache(choice) if choice else None
