"""The exception tree. Every error the engine raises on purpose is an ``IftError``.

Messages are written for the person who must fix the input: they name the file, node and
field involved and say what to do. The CLI prints ``str(error)`` as one line and exits 2.
"""

from __future__ import annotations


class IftError(Exception):
    """Base class of every error ift_engine raises on purpose."""


class PluginError(IftError):
    """A plugin failed to load or registered something invalid."""


class RegistrationError(PluginError):
    """Two plugins registered the same name, or a registered object is malformed."""


class TemplateError(IftError):
    """An instruction template is malformed or was rendered with the wrong variables."""


class ModelError(IftError):
    """A model could not be resolved, loaded or called."""


class ParseError(IftError):
    """A model answer does not have the form the node expects."""


class ConstraintError(IftError):
    """A schema, regex or label set cannot limit what a model answers (malformed, too large, or
    using what constrained decoding does not support)."""


class WorkflowError(IftError):
    """A workflow file or spec is invalid: schema, references, cycles."""


class InputError(WorkflowError):
    """A run's inputs are wrong: ``field`` names the input (None: the inputs as a whole) and
    ``message`` says what is wrong, without the workflow file, which ``str()`` adds. A batch row
    or a service reply quotes ``message`` alone."""

    def __init__(self, source: str, field: str | None, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source, self.field, self.message = source, field, message


class TrainError(IftError):
    """A training file, dataset, output folder or run is invalid."""


class EvalError(IftError):
    """An evaluation file, its data, paraphrases or models are invalid."""


class NodeError(IftError):
    """A node failed while running. ``partial`` holds the results of the nodes that finished."""

    def __init__(self, node: str, message: str, partial: object = None) -> None:
        super().__init__(f"node '{node}': {message}")
        self.node = node
        self.partial = partial


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    one-line error quotes of a library's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
