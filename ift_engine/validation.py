"""Turning pydantic validation errors into one-line engine errors that name the field."""

from __future__ import annotations

import difflib
import functools
import types
import typing
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
        raise error(f"{source}: {first_problem(exc, model, data)}") from None


def first_problem(exc: ValidationError, model: type[BaseModel], data: Any) -> str:
    """``field: what is wrong`` for the first error of ``exc``; an unknown field is named with
    the fields known there, the nearest first (``max_tokens``: did you mean ``max_new_tokens``?)."""
    errors = exc.errors()
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    # Pydantic adds union branch names ("constrained-str", "ModelSpec") to locations; drop them.
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and (p[:1].isupper() or p in UNION_TAGS)))
    message = first["msg"]
    if first["type"] == "extra_forbidden" and loc:
        holder = model_at(model, loc[:-1])
        known = [field.alias or name for name, field in holder.model_fields.items()] if holder else []
        if known:
            near = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.75)
            hint = f"did you mean '{near[0]}'? " if near else ""
            message = f"unknown field ({hint}known: {', '.join(known)})"
    return f"{describe_location(loc, data)}: {message}{more}"


def model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the fields at ``loc`` inside ``model``, where the
    annotations say so plainly (a model, a list or dict of models, one optional); else None."""
    current: Any = model
    for part in loc:
        current = _plain(current)
        if isinstance(part, int) or typing.get_origin(current) is dict:
            args = typing.get_args(current)
            current = args[-1] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            return None
    current = _plain(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _plain(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> X; a union with one model (or one type besides None) -> it."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        rest = [a for a in args if a is not type(None)]
        return models[0] if len(models) == 1 else rest[0] if len(rest) == 1 else annotation
    return annotation
