"""Hugging Face hub ids, failing fast where the hub cannot be reached.

transformers retries an unreachable hub for about 50 seconds before it gives up with a
traceback. A hub id is resolved here first: a model already in the local hub cache is used from
there (no network needed); otherwise one short connection attempt says at once whether a
download can work.
"""

from __future__ import annotations

import functools
import socket
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ModelError

CONNECT_SECONDS = 3.0


@functools.cache
def hub_reachable() -> bool:
    """Whether the hub endpoint accepts a TCP connection (asked once per process)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=CONNECT_SECONDS).close()
    except OSError:
        return False
    return True


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
