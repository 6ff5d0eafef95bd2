"""An ift_engine plugin: one template and one answer parser. See docs/plugins.md for every hook."""

from __future__ import annotations

from ift_engine import AnswerParser, InstructionTemplate, ParseError, hookimpl


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
        raise ParseError(f"expected yes or no, got {answer.strip()[:40]!r}")
    return word == "yes"


@hookimpl
def register_parsers(register):
    register(AnswerParser("yes_no", parse_yes_no, "a boolean from a yes/no answer"))
