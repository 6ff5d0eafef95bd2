"""Hugging Face hub ids, failing fast where the hub cannot be reached.

transformers retries an unreachable hub for about 50 seconds before it gives up with a
traceback. A hub id is resolved here first: a model already in the local hub cache is used from
there (no network needed); otherwise one short connection attempt says at once whether a
download can work.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ModelError

CONNECT_SECONDS = 3.0


class Reachability:
    """Whether the hub endpoint accepts a TCP connection: asked at most once per ``ttl``
    seconds for each endpoint, so a service started offline finds the hub once it is back."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._answers: dict[tuple[str, bool], tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        from huggingface_hub import constants

        key = (constants.ENDPOINT, bool(constants.HF_HUB_OFFLINE))
        with self._lock:
            asked = self._answers.get(key)
            if asked is not None and time.monotonic() - asked[0] < self.ttl:
                return asked[1]
        answer = not key[1] and _accepts_connection(key[0])
        with self._lock:
            self._answers[key] = (time.monotonic(), answer)
        return answer

    def cache_clear(self) -> None:
        with self._lock:
            self._answers.clear()


def _accepts_connection(endpoint: str) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=CONNECT_SECONDS).close()
    except OSError:
        return False
    return True


hub_reachable = Reachability()


def cached_snapshot(repo_id: str) -> Path | None:
    """The local folder of a hub model already downloaded (its config.json is cached)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def resolve_hub_id(repo_id: str) -> str:
    """A cached snapshot folder, or the id itself when the hub can be reached to download it."""
    snapshot = cached_snapshot(repo_id)
    if snapshot is not None:
        return str(snapshot)
    if not hub_reachable():
        from huggingface_hub import constants

        raise ModelError(
            f"model '{repo_id}' is not in the local hub cache and the Hugging Face hub "
            f"({constants.ENDPOINT}) cannot be reached (offline?); download it where the hub is "
            "reachable, or give a local model folder or .gguf file"
        )
    return repo_id
