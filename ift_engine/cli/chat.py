"""``ift chat MODEL``: a streamed conversation with a model in the terminal."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import IftError


def add_parser(sub: Any) -> None:
    chat = sub.add_parser("chat", help="chat with a model in the terminal, the reply streamed")
    chat.add_argument("model", help="an alias, a model folder, an export, a .gguf file or a hub id")
    chat.add_argument("--backend", help="hf-causal, onnx, ... (default: inferred from the model)")
    chat.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a backend option")
    chat.add_argument("--system", metavar="TEXT", help="a system message that starts the conversation")
    chat.add_argument("--max-tokens", type=int, default=256, help="most new tokens per reply (default 256)")
    chat.add_argument("--temperature", type=float, default=0.0, help="0 (default) decodes greedily")
    chat.add_argument("--top-p", type=float, default=1.0)
    chat.add_argument("--seed", type=int)
    chat.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..models.base import GenerationSettings
    from ..terminal_chat import chat, model_options

    given = {"max_new_tokens": args.max_tokens, "temperature": args.temperature, "top_p": args.top_p}
    try:
        settings = GenerationSettings(**given, seed=args.seed)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0])
        flag = {"max_new_tokens": "max-tokens", "top_p": "top-p"}.get(field, field)
        raise IftError(f"--{flag}: {first['msg']}") from None
    from ..engine import Engine

    with Engine() as engine:
        chat(args.model, args.backend, model_options(args.option), settings, args.system, pool=engine.pool)
    return 0
