"""Turning pydantic validation errors into one-line engine errors that name the field."""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import IftError

M = TypeVar("M", bound=BaseModel)
UNION_TAGS = {"constrained-str", "str"}


def describe_location(loc: tuple[Any, ...], data: Any) -> str:
    """``('nodes', 1, 'generation', 'seed')`` -> ``nodes[1] (id 'content').generation.seed``."""
    parts: list[str] = []
    current = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(current, list) and 0 <= item < len(current):
                current = current[item]
                if isinstance(current, dict) and isinstance(current.get("id"), str):
                    label += f" (id '{current['id']}')"
            else:
                current = None
            parts.append(label)
        else:
            parts.append(f".{item}" if parts else str(item))
            current = current.get(item) if isinstance(current, dict) else None
    return "".join(parts) or "(top level)"


@functools.cache
def forbidding_extra(model: type[M]) -> type[M]:
    """``model``, or a subclass of it that rejects unknown keys when the model left ``extra``
    unset: a typo in a plugin's options is an error, as it is in the built-ins'. A model that
    asks for ``extra="allow"`` keeps it."""
    if model.model_config.get("extra") in ("forbid", "allow"):
        return model
    config = ConfigDict(**{**model.model_config, "extra": "forbid"})  # type: ignore[typeddict-item]
    return type(model.__name__, (model,), {"model_config": config, "__module__": model.__module__})


def validate_document(model: type[M], data: Any, source: str, error: type[IftError]) -> M:
    """``model.model_validate(data)`` (unknown keys rejected, see ``forbidding_extra``); the first
    problem becomes ``error`` naming the field."""
    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping of fields at the top level")
    try:
        return forbidding_extra(model).model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        # Pydantic adds union branch names ("constrained-str", "ModelSpec") to locations; drop them.
        loc = tuple(
            p for p in first["loc"] if not (isinstance(p, str) and (p[:1].isupper() or p in UNION_TAGS))
        )
        message = first["msg"]
        if first["type"] == "extra_forbidden" and len(loc) == 1:
            message = f"unknown field (known: {', '.join(model.model_fields) or 'none'})"
        raise error(f"{source}: {describe_location(loc, data)}: {message}{more}") from None
