"""Training records: reading files, the common formats, and turning records into examples.

Formats (detected from the fields when not given):

- ``alpaca``: ``instruction``, optional ``input``, ``output``
- ``prompt-completion``: ``prompt``, ``completion`` as text, or (TRL's conversational form) as
  message lists: the prompt's messages, then one assistant message
- ``messages``: a chat ``messages`` list ending with the assistant's answer
- ``sharegpt``: ``conversations`` of ``{from, value}`` turns (LLaMA-Factory's ShareGPT form;
  ``human``/``gpt``/``system``), ending with the assistant's answer
- ``text``: plain ``text`` for language modelling: every token is trained, no chat template
- ``task``: the variables of a template (e.g. ``text``) and ``output``; each record is rendered
  with one paraphrase of the template (FLAN style)

``columns`` renames fields first (``{instruction: question, output: answer}``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..augment import Augmenter
from ..records import DataError, record_text, task_values
from ..templates import InstructionTemplate, Message

Format = Literal["alpaca", "prompt-completion", "messages", "sharegpt", "text", "task"]
CHAT_ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


@dataclass(frozen=True)
class Example:
    """One training example: the chat prompt and the answer the model should learn."""

    prompt: tuple[Message, ...]
    completion: str
    task: str | None = None
    labels: tuple[str, ...] = ()
    paraphrase: int | None = None
    #: Plain text for language modelling (format ``text``): no prompt, every token trained.
    language_model: bool = False
    #: Task records: the template, the paraphrase text used, and the record's values as read
    #: (before augmentation), so the same record can be asked with every paraphrase.
    template: str | None = None
    instruction: str | None = None
    values: tuple[tuple[str, str], ...] = ()


def detect_format(record: Mapping[str, Any]) -> Format:
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record:
        return "alpaca"
    if "prompt" in record and "completion" in record:
        return "prompt-completion"
    if "text" in record and "output" not in record:
        return "text"
    return "task"


def _chat(messages: Any, field: str, where: str) -> list[dict[str, str]]:
    """A list of ``{role, content}`` messages, or ``DataError`` naming the field."""
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise DataError(f"{where}: field '{field}' must be a list of {{role, content}} messages")
    unknown = [m["role"] for m in messages if m["role"] not in CHAT_ROLES]
    if unknown:
        raise DataError(
            f"{where}: field '{field}': unknown role {unknown[0]!r} (roles: {', '.join(CHAT_ROLES)})"
        )
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _split_answer(messages: list[dict[str, str]], field: str, where: str) -> tuple[list[dict[str, str]], str]:
    """(the prompt's messages, the answer) of a chat that ends with the assistant's answer."""
    if len(messages) < 2:
        raise DataError(f"{where}: field '{field}' needs at least two turns")
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: field '{field}' must end with the assistant's answer")
    return messages[:-1], messages[-1]["content"]


class ExampleBuilder:
    """Turns records of one dataset into examples, augmenting input text only.

    ``template`` is required for the ``task`` format; ``paraphrases`` limits which of its
    paraphrases are used; ``policy`` picks one per record, round-robin or seeded at random.
    """

    def __init__(
        self,
        fmt: Format | None,
        template: InstructionTemplate | None,
        paraphrases: Sequence[int] | None,
        policy: Literal["round-robin", "random"],
        augmenters: Sequence[Augmenter],
        seed: int,
    ) -> None:
        self.fmt = fmt
        self.template = template
        self.paraphrases = (
            list(paraphrases)
            if paraphrases is not None
            else (list(range(len(template.paraphrases))) if template else [0])
        )
        self.policy = policy
        self.augmenters = augmenters
        self.seed = seed

    def _augment(self, text: str, rng: random.Random) -> str:
        for augmenter in self.augmenters:
            text = augmenter.augment(text, rng)
        return text

    def build(self, index: int, where: str, record: Any, copy: int = 0) -> Example:
        """Example ``copy`` of record ``index`` (copy 0 is never augmented)."""
        if not isinstance(record, dict):
            raise DataError(f"{where}: a record must be an object with named fields")
        # Seeding with a string is stable across processes (unlike hash()).
        rng = random.Random(f"{self.seed}:{index}:{copy}")
        augment: Callable[[str], str] = (lambda t: self._augment(t, rng)) if copy else (lambda t: t)
        fmt = self.fmt or detect_format(record)
        if fmt == "messages":
            return self._chat_example(
                _chat(record.get("messages"), "messages", where), "messages", where, augment
            )
        if fmt == "sharegpt":
            return self._chat_example(
                _sharegpt(record.get("conversations"), where), "conversations", where, augment
            )
        if fmt == "alpaca":
            instruction = record_text(record, "instruction", where)
            extra = record.get("input") or ""
            user = f"{instruction}\n\n{augment(extra)}" if extra else instruction
            return Example(({"role": "user", "content": user},), record_text(record, "output", where))
        if fmt == "prompt-completion":
            return self._prompt_completion(record, where, augment)
        if fmt == "text":
            return Example((), record_text(record, "text", where), language_model=True)
        return self._task(index, copy, record, where, augment)

    def _chat_example(
        self, messages: list[dict[str, str]], field: str, where: str, augment: Callable[[str], str]
    ) -> Example:
        """The chat up to its last turn as the prompt (its last user message augmented)."""
        prompt, answer = _split_answer(messages, field, where)
        users = [i for i, m in enumerate(prompt) if m["role"] == "user"]
        if users:
            prompt[users[-1]]["content"] = augment(prompt[users[-1]]["content"])
        return Example(tuple(prompt), answer)

    def _prompt_completion(
        self, record: dict[str, Any], where: str, augment: Callable[[str], str]
    ) -> Example:
        prompt, completion = record.get("prompt"), record.get("completion")
        if isinstance(prompt, list) or isinstance(completion, list):  # TRL's conversational form
            answer = _chat(completion, "completion", where)
            if len(answer) != 1 or answer[0]["role"] != "assistant":
                raise DataError(f"{where}: field 'completion' must be one assistant message")
            return self._chat_example([*_chat(prompt, "prompt", where), answer[0]], "prompt", where, augment)
        text = augment(record_text(record, "prompt", where))
        return Example(({"role": "user", "content": text},), record_text(record, "completion", where))

    def _task(
        self, index: int, copy: int, record: dict[str, Any], where: str, augment: Callable[[str], str]
    ) -> Example:
        if self.template is None:
            raise DataError(
                f"{where}: record has none of instruction/prompt/messages/conversations/text, so it needs a "
                "template: set 'template' on the dataset"
            )
        template = self.template
        read, output = task_values(template, record, where)
        values = {name: augment(value) for name, value in read.items()}
        if self.policy == "round-robin":
            paraphrase = self.paraphrases[index % len(self.paraphrases)]
        else:
            paraphrase = random.Random(f"{self.seed}:paraphrase:{index}:{copy}").choice(self.paraphrases)
        rendered = template.render(values, paraphrase=paraphrase)
        return Example(
            rendered.messages,
            output,
            template.task,
            template.labels,
            paraphrase,
            template=template.name,
            instruction=template.paraphrases[paraphrase],
            values=tuple(read.items()),
        )


def _sharegpt(turns: Any, where: str) -> list[dict[str, str]]:
    """ShareGPT ``{from, value}`` turns as ``{role, content}`` messages."""
    if not isinstance(turns, list) or not all(
        isinstance(t, dict) and t.get("from") in SHAREGPT_ROLES and isinstance(t.get("value"), str)
        for t in turns
    ):
        raise DataError(
            f"{where}: field 'conversations' must be a list of {{from, value}} turns, from one of "
            f"{', '.join(SHAREGPT_ROLES)}"
        )
    return [{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]} for t in turns]
