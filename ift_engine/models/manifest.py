"""``ift_model.json``: what the engine writes beside a model it made (trained, exported or an
adapter), and the one way to read it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files import read_json_mapping

MANIFEST = "ift_model.json"


def read_manifest(folder: Path | str) -> dict[str, Any] | None:
    """The manifest in ``folder``, or None when there is none (no folder, no file, or not a
    small JSON object: then the folder is not one the engine made)."""
    folder = Path(folder).expanduser()
    return read_json_mapping(folder / MANIFEST) if folder.is_dir() else None
