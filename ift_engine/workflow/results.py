"""What a run returns: each input's ``RunResult`` with its nodes' ``NodeResult``s, and the
events a caller hears as it goes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..files import json_text

#: Streamed text of a run: (item, node id, element of a map node or None, new text); called
#: on the model's worker thread.
TextEvents = Callable[["RunResult", str, "int | None", str], None]


@dataclass
class NodeResult:
    """What one node did for one input: its output, the model's raw answer, the prompt, and
    timing (of the batched call the item was part of). A ``map`` node's output is the list of
    its elements' outputs, and ``items`` holds each element's own result."""

    node: str
    output: Any
    raw: str | None
    prompt: list[dict[str, str]]
    paraphrase: int
    model: str
    started: float
    seconds: float
    probabilities: dict[str, float] | None = None
    #: For ensembles: each member's answer and score, beside the ensemble's.
    members: dict[str, Any] | None = None
    #: True when the answer came from the on-disk cache.
    cached: bool = False
    items: list[NodeResult] | None = None
    #: Why the node did not run for this input (its ``when`` was false, or a node it reads was
    #: skipped); None when it ran.
    skipped: str | None = None
    #: For a node in a ``repeat`` loop: which run this is (from 1), and every run's result, the
    #: last being this one.
    iteration: int | None = None
    iterations: list[NodeResult] | None = None


@dataclass
class ItemError:
    """Why one input failed: the node (None for bad inputs) and the message."""

    node: str | None
    message: str

    def __str__(self) -> str:
        return f"node '{self.node}': {self.message}" if self.node else self.message


@dataclass
class RunResult:
    """One input's run. ``outputs`` holds the declared workflow outputs (null for a skipped
    node); ``nodes`` every node that finished or was skipped; ``error`` says which node failed
    and why."""

    workflow: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, NodeResult] = field(default_factory=dict)
    seconds: float = 0.0
    error: ItemError | None = None
    id: Any = None

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json_text(self.to_dict(), indent=2)

    def row(self) -> dict[str, Any]:
        """The compact record a batch run writes per input."""
        return {
            "id": self.id,
            "outputs": self.outputs,
            "error": asdict(self.error) if self.error else None,
            "cached": [n for n, r in self.nodes.items() if r.cached],
            "skipped": [n for n, r in self.nodes.items() if r.skipped is not None],
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class RunOptions:
    """Per-run choices: ``generation`` settings that override every node's (checked by the
    caller, e.g. ``{"max_new_tokens": 32}``), and whether the answer cache is used."""

    generation: dict[str, Any] = field(default_factory=dict)
    cache: bool = True


@dataclass
class RunEvents:
    """What a caller hears of a run as it goes (see ``Runner.run_batch``)."""

    node_start: Callable[[RunResult, str], None] | None = None
    node_done: Callable[[RunResult, NodeResult], None] | None = None
    text: TextEvents | None = None
