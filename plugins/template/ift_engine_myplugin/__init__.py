"""An ift_engine plugin: a template, an answer parser and its own settings. See docs/plugins.md."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ift_engine.plugin import (
    AnswerParser,
    InstructionTemplate,
    ParseError,
    PluginSettings,
    current_settings,
    hookimpl,
)


@hookimpl
def register_templates(register):
    register(
        InstructionTemplate(
            name="yes-no-en",
            task="yes_no",
            language="en",
            variables=["question"],
            paraphrases=[
                "Answer with yes or no: {question}",
                "{question}\n\nReply with one word, yes or no.",
            ],
        )
    )


def parse_yes_no(answer: str, template: InstructionTemplate) -> bool:
    words = answer.strip().lower().split()
    word = words[0].strip(".,!") if words else ""
    if word not in ("yes", "no"):
        if not current_settings("myplugin", Settings).strict:
            return False
        raise ParseError(f"expected yes or no, got {answer.strip()[:40]!r}")
    return word == "yes"


def yes_no_output(template: InstructionTemplate) -> dict:
    return {"type": "boolean"}  # what parse_yes_no returns: typed edges check what reads it


@hookimpl
def register_parsers(register):
    register(AnswerParser("yes_no", parse_yes_no, "a boolean from a yes/no answer", yes_no_output))


class Settings(BaseModel):
    """This plugin's settings, under ``plugins: {myplugin: {...}}`` in a workflow file."""

    model_config = ConfigDict(extra="forbid")

    strict: bool = True  # False: an answer that is neither yes nor no counts as no


@hookimpl
def register_settings(register):
    register(PluginSettings("myplugin", Settings))
