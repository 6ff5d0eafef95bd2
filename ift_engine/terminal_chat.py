"""``ift chat MODEL``: a conversation with any model in the terminal, the reply streamed as it is
generated. The quickest way to try a fine-tune: a model folder, an alias, an export or a GGUF
file, on any backend, through the same model worker as workflows and the service.

Lines starting with ``/`` are commands (``/reset``, ``/exit``, ``/help``); Ctrl-C stops a reply,
Ctrl-D (or the end of piped input) ends the chat. Piped input is read line by line, one message
per line, so a chat can be scripted: ``printf 'Hello\\n' | ift chat smollm2-135m-instruct``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, TextIO

from .errors import IftError, ModelError
from .models.base import GenerationSettings
from .models.resolve import ModelPool, ModelSpec
from .models.worker import Completion, Worker

HELP = "/reset forgets the conversation, /exit ends it; Ctrl-C stops a reply, Ctrl-D ends the chat"


def model_options(pairs: list[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs, each value read as YAML (``batch_size=4`` is a number)."""
    from .documents import parse_yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise IftError(f"--option {pair!r} must look like KEY=VALUE, e.g. --option device=cpu")
        options[key.strip()] = parse_yaml(value, f"--option {key}", IftError)
    return options


def lines(source: TextIO, interactive: bool, out: TextIO) -> Iterator[str]:
    """The user's messages: typed at a prompt, or read from piped input."""
    while True:
        if interactive:
            out.write("you> ")
            out.flush()
        line = source.readline()
        if not line:
            return
        yield line.rstrip("\r\n")


class Conversation:
    """The messages so far, and one reply at a time from ``worker``."""

    def __init__(self, worker: Worker, settings: GenerationSettings, system: str | None, out: TextIO):
        self.worker, self.settings, self.out = worker, settings, out
        self.start: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        self.messages = list(self.start)

    def reset(self) -> None:
        self.messages = list(self.start)

    def reply(self, text: str) -> None:
        """Stream the answer to ``text``; it joins the conversation only once whole."""
        asked = [*self.messages, {"role": "user", "content": text}]
        shown: list[str] = []

        def show(index: int, piece: str) -> None:  # on the worker's thread, in order
            shown.append(piece)
            self.out.write(piece)
            self.out.flush()

        future = self.worker.generate([asked], self.settings, show)
        try:
            [outcome] = future.result()
        except KeyboardInterrupt:
            future.cancel()  # the row leaves the batch at the next step
            self.out.write(" [stopped]\n")
            return
        if not isinstance(outcome, Completion):
            self.out.write(("\n" if shown else "") + f"[the model failed: {outcome.message}]\n")
            return
        if not shown:  # a backend that does not stream
            self.out.write(outcome.text)
        self.out.write("\n")
        self.messages = [*asked, {"role": "assistant", "content": outcome.text}]


def chat(
    model: str,
    backend: str | None,
    options: dict[str, Any],
    settings: GenerationSettings,
    system: str | None = None,
    source: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    pool: ModelPool | None = None,
) -> None:
    """Chat with ``model`` until the input ends or the user types ``/exit``; the model loads
    into ``pool`` (an engine's, left open), else into one of its own, closed at the end."""
    own = pool is None
    if pool is None:
        from .plugins import installed_components

        pool = ModelPool(installed_components())
    interactive = source.isatty()
    try:
        spec = ModelSpec(name=model, backend=backend, options=options)
    except ValueError as exc:
        raise ModelError(f"ift chat {model}: {exc}") from None
    print(f"loading {model} ...", file=sys.stderr, flush=True)
    try:
        worker = pool.worker(spec)
        if interactive:
            print(f"chatting with {model}; {HELP}", file=sys.stderr)
        conversation = Conversation(worker, settings, system, out)
        for text in lines(source, interactive, out):
            if text.strip() in ("/exit", "/quit"):
                return
            if text.strip() == "/reset":
                conversation.reset()
                print("(the conversation starts afresh)", file=sys.stderr)
            elif text.strip() == "/help":
                print(HELP, file=sys.stderr)
            elif text.strip():
                if interactive:
                    out.write("model> ")
                conversation.reply(text)
    finally:
        if own:
            pool.close()
