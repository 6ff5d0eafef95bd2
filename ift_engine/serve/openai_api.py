"""The OpenAI-compatible part of the API: request model and response shapes of
``/v1/chat/completions`` (plain and streamed) and ``/v1/models``."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConstraintError
from ..files import json_text
from ..models.base import GenerationSettings
from ..models.worker import Completion
from ..structured import Constraint, json_constraint


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = "response"
    answer_schema: dict[str, Any] | bool = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``response_format``: free text, any JSON object, or JSON that a schema describes."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def constraint(self) -> Constraint | None:
        """What decoding is limited to; ``ConstraintError`` for a schema it cannot use."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return json_constraint({"type": "object"})
        if self.json_schema is None:
            raise ConstraintError("type json_schema needs json_schema: {name, schema}")
        return json_constraint(self.json_schema.answer_schema)


class ChatRequest(BaseModel):
    """What the server reads of a chat completion request; other OpenAI fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    response_format: ResponseFormat | None = None

    def overrides(self) -> dict[str, Any]:
        """The generation settings the request names, as overrides of a model's or a
        workflow's own (not yet checked: see ``checked_overrides``)."""
        limit = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        given = {"max_new_tokens": limit, "temperature": self.temperature, "top_p": self.top_p}
        given["seed"] = self.seed
        return {k: v for k, v in given.items() if v is not None}

    def last_user_text(self) -> str:
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else self.messages[-1].content


def checked_overrides(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` generation settings, checked against ``GenerationSettings`` (names and bounds:
    ``ValidationError`` when wrong)."""
    return GenerationSettings(**given).model_dump(include=set(given))


def usage(reply: Completion) -> dict[str, int] | None:
    """Token counts, where the backend counts them (not the mock, not a workflow's reply)."""
    if reply.prompt_tokens is None or reply.completion_tokens is None:
        return None
    prompt, completion = reply.prompt_tokens, reply.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(model: str, reply: Completion) -> dict[str, Any]:
    message = {"role": "assistant", "content": reply.text}
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish}],
    }
    counts = usage(reply)
    if counts is not None:
        body["usage"] = counts
    return body


class ChunkWriter:
    """Server-sent events of a streamed completion: ``chunk(text)`` for each piece of the reply,
    then ``stop(reply)``, then ``done()`` (the ``[DONE]`` line); ``error(message)`` on a failure."""

    def __init__(self, model: str) -> None:
        self.base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self.first = True

    def _event(self, delta: dict[str, str], finish: str | None) -> str:
        chunk = {**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json_text(chunk)}\n\n"

    def chunk(self, text: str) -> str:
        delta = {"role": "assistant", "content": text} if self.first else {"content": text}
        self.first = False
        return self._event(delta, None)

    def stop(self, reply: Completion) -> str:
        return self._event({}, reply.finish)

    def usage(self, reply: Completion) -> str:
        """The last chunk when ``stream_options.include_usage``: no choices, the usage."""
        return f"data: {json_text({**self.base, 'choices': [], 'usage': usage(reply)})}\n\n"

    @staticmethod
    def error(message: str, kind: str) -> str:
        return f"data: {json_text({'error': {'message': message, 'type': kind}})}\n\n"

    @staticmethod
    def done() -> str:
        return "data: [DONE]\n\n"


def model_list(names: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 0, "owned_by": "ift-engine"} for n in names],
    }
