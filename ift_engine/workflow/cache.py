"""The on-disk answer cache: one JSON file per (node settings, prompt, model identity) key.

The key is a SHA-256 over everything that can change an answer: the rendered prompt (so the
template text and the inputs), the answer form, labels and parser, the generation settings, the
plugin settings of the run, and the model's identity (its spec and a fingerprint of its files).
Files are written beside and renamed into place, so concurrent processes (batch runs, Ray
workers) never read half an entry; the staging file of a killed writer is removed by the next
write of the same key. An entry that does not read back as an answer is a miss.
A plain folder rather than sqlite or diskcache: entries are small, writes are rare next to model
calls, and there is nothing to lock or migrate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..documents import read_bytes
from ..errors import IftError
from ..files import files_fingerprint
from ..models.resolve import EnsembleSpec, ModelPool, ModelSpec, cache_home

log = logging.getLogger(__name__)
KEY_VERSION = 2
#: A staging file older than this belongs to a dead writer (a live one renames it in
#: milliseconds).
STAGING_GRACE_SECONDS = 60
#: Far more than any answer (generation stops at 32,768 tokens): a larger entry is not one.
MAX_ENTRY_BYTES = 16 * 2**20
ANSWER_FIELDS = {"raw": (str, type(None)), "label": (str, type(None)), "probabilities": (dict, type(None))}


def is_answer(value: Any) -> bool:
    """Whether a cache entry read back has the shape of a stored answer."""
    return (
        isinstance(value, dict)
        and set(value) <= {*ANSWER_FIELDS, "members", "cached"}
        and all(isinstance(value.get(name), kinds) for name, kinds in ANSWER_FIELDS.items())
        and (value.get("raw") is not None or value.get("label") is not None)
    )


def model_identity(pool: ModelPool, spec: ModelSpec | EnsembleSpec) -> str:
    """The spec plus, for models with weights on disk, the fingerprint of their files (an
    adapter's and its base's)."""
    if isinstance(spec, EnsembleSpec):
        members = [
            model_identity(pool, m if isinstance(m, ModelSpec) else ModelSpec(name=m)) for m in spec.members
        ]
        return json.dumps({"ensemble": spec.ensemble, "weights": spec.weights, "members": members})
    token = pool.added_token(spec)
    if token is not None:  # built in code: nothing on disk says what it answers, so this model only
        return json.dumps({"spec": spec.key(), "added": token})
    spec = pool.resolve(spec)
    parts = {"spec": spec.key()}
    if pool.backend_for(spec).locates_weights:
        where = pool.locate(spec.base())
        parts["files"] = files_fingerprint(Path(where)) if Path(where).exists() else where  # hub id
    if spec.adapter is not None:
        parts["adapter"] = files_fingerprint(Path(spec.adapter))  # a retrained adapter answers anew
    return json.dumps(parts, sort_keys=True)


class AnswerCache:
    """Answers on disk under ``folder`` (default: ``$IFT_ENGINE_CACHE``, else
    ``$IFT_ENGINE_HOME/answers``)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        default = os.environ.get("IFT_ENGINE_CACHE") or cache_home() / "answers"
        self.folder = Path(folder or default)
        self._warned = False

    def warn_once(self, message: str) -> None:
        """Say the first time the cache cannot be written (not once per answer)."""
        if not self._warned:
            self._warned = True
            log.warning("%s; the run goes on without storing answers", message)

    @staticmethod
    def key(**parts: Any) -> str:
        # ASCII escapes: text UTF-8 cannot hold (lone surrogates) still hashes.
        text = json.dumps({"v": KEY_VERSION, **parts}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored answer, or None: missing, unreadable, not a regular file (a device or FIFO
        put in its place is never read or waited on), over ``MAX_ENTRY_BYTES``, or not an answer."""
        try:
            value = json.loads(read_bytes(self._path(key), "cache entry", IftError, MAX_ENTRY_BYTES))
        except (IftError, ValueError, RecursionError):
            return None
        return value if is_answer(value) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        for orphan in path.parent.glob(f".{key}.*"):  # left by a writer killed mid-write
            if time.time() - orphan.stat().st_mtime > STAGING_GRACE_SECONDS:
                orphan.unlink(missing_ok=True)
        fd, staging = tempfile.mkstemp(prefix=f".{key}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(value, file)
            os.replace(staging, path)
        finally:
            Path(staging).unlink(missing_ok=True)


CacheChoice = bool | str | Path | AnswerCache


def answer_cache(choice: CacheChoice) -> AnswerCache | None:
    """True: the default cache; a folder or an ``AnswerCache``: that one; False: none."""
    if isinstance(choice, AnswerCache):
        return choice
    if choice is True:
        return AnswerCache()
    return AnswerCache(choice) if choice else None
