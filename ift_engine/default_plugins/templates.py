"""Built-in instruction template packs (English and Chinese), read from YAML files here."""

from __future__ import annotations

from importlib.resources import files

import yaml

from ..hookspecs import Register, hookimpl
from ..templates import InstructionTemplate


def builtin_templates() -> list[InstructionTemplate]:
    templates = []
    for resource in sorted(files(__package__).joinpath("templates").iterdir(), key=str):
        if resource.name.endswith(".yaml"):
            for entry in yaml.safe_load(resource.read_text(encoding="utf-8")):
                templates.append(InstructionTemplate(**entry))
    return templates


@hookimpl
def register_templates(register: Register[InstructionTemplate]) -> None:
    for template in builtin_templates():
        register(template)
