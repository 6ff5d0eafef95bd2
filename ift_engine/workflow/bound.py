"""What binding makes of a node (``BoundNode``), and how the checks of a bound workflow say
where a problem is (``ErrorAt``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import WorkflowError
from ..models.base import GenerationSettings
from ..models.resolve import EnsembleSpec, ModelSpec
from ..parsers import AnswerParser
from ..structured import Constraint
from ..templates import InstructionTemplate
from .spec import InputSource, InputType, NodeSpec


class ErrorAt(Protocol):
    def __call__(self, message: str, node: str | None = None, field: str | None = None) -> WorkflowError:
        """A one-line error naming the file, and the node and field where given."""
        ...


@dataclass(frozen=True)
class BoundNode:
    """A node with every name resolved: what the runner needs to execute it."""

    spec: NodeSpec
    template: InstructionTemplate
    parser: AnswerParser
    model: ModelSpec | EnsembleSpec
    generation: GenerationSettings
    dependencies: tuple[str, ...]
    sources: dict[str, InputSource]
    #: What decoding is limited to (the template's schema, labels, line count or regex).
    constraint: Constraint | None = None
    #: The JSON Schema of the node's output (a list of answers for a map node); None where its
    #: parser does not say.
    output: dict[str, Any] | None = None

    def input_type(self, variable: str) -> InputType | None:
        """The type an input must have: the one it declares, and a list for the map input."""
        return "list" if variable == self.spec.map else self.sources[variable].type
