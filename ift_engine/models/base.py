"""The model interface every backend implements, and the settings it is called with."""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, get_args, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ModelError

Message = dict[str, str]
Prompt = Sequence[Message]


class GenerationSettings(BaseModel):
    """Decoding settings. ``temperature: 0`` is greedy; sampling with a ``seed`` is repeatable."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(256, ge=1, le=32768)
    temperature: float = Field(0.0, ge=0.0, le=10.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="what native samplers take")
    #: >1 discourages repeating tokens (small models loop without it under greedy decoding).
    repetition_penalty: float = Field(1.0, ge=1.0, le=2.0)


#: Receives streamed text: the prompt's index in the call, and the text added since last time.
TextSink = Callable[[int, str], None]

#: What a model can be asked to do, as its class declares in ``capabilities``:
#:
#: - ``generate``: answer prompts with text (``generate``);
#: - ``stream``: hand out the text as it grows (``generate_stream``, ``StreamsText``);
#: - ``score``: the log-likelihood of given answers (``score``); a model that scores also
#:   classifies, by a softmax over its labels' scores, unless it defines ``classify`` itself;
#: - ``classify``: probabilities over a label set (``classify``);
#: - ``steps``: decoding one token at a time (``start_decoding``, ``DecodesSteps``), what
#:   token-level ensembles need;
#: - ``members``: answers that carry each member's (ensembles: ``classify_with_members`` or
#:   ``generate_with_members``), shown in the run trace and on the page.
Capability = Literal["generate", "stream", "score", "classify", "steps", "members"]
CAPABILITIES: frozenset[str] = frozenset(get_args(Capability))
#: The method a declared capability promises (``members`` depends on the answer form).
_METHODS = {
    "generate": "generate",
    "stream": "generate_stream",
    "score": "score",
    "classify": "classify",
    "steps": "start_decoding",
}


@runtime_checkable
class StreamsText(Protocol):
    """A model that can hand out its answers as they are generated."""

    def generate_stream(
        self, prompts: Sequence[Prompt], settings: GenerationSettings, on_text: TextSink
    ) -> list[str]:
        """``generate``, calling ``on_text(index, new text)`` as each answer grows."""
        ...


class DecodingSteps(Protocol):
    """A batch being decoded one token at a time (see ``DecodesSteps``)."""

    def logits(self) -> Any:
        """The next token's logits, a float tensor of shape (prompts, vocabulary) on the CPU."""
        ...

    def advance(self, chosen: Sequence[int]) -> None:
        """Feed each row the token chosen for it."""
        ...


@runtime_checkable
class DecodesSteps(Protocol):
    """A causal LM that exposes its decoding step by step (token-level ensembles use it)."""

    tokenizer: Any
    stop_ids: list[int]

    def start_decoding(self, prompts: Sequence[Prompt]) -> DecodingSteps:
        """Start decoding ``prompts``; ``logits`` gives the first answer token's logits."""
        ...


class AnswersWithMembers(Protocol):
    """An ensemble (capability ``members``): its answers with each member's."""

    members: Sequence[Model]

    def classify_with_members(
        self, prompts: Sequence[Prompt], labels: Sequence[str]
    ) -> tuple[list[list[float]], list[list[list[float]]]]:
        """(combined probabilities, each member's probabilities), for label ensembles."""
        ...

    def generate_with_members(
        self, prompts: Sequence[Prompt], settings: GenerationSettings
    ) -> tuple[list[str], list[Any]]:
        """(answers, one detail per prompt or None), for text ensembles."""
        ...


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Model(ABC):
    """A loaded model. A backend declares what it can do in ``capabilities`` and defines
    those methods; the engine asks ``can`` before it binds a node or an ensemble to it.

    ``generate`` answers chat prompts with text; ``classify`` returns, for each prompt, a
    probability for each of ``labels`` (in that order); ``score`` returns, for each prompt, the
    log-likelihood of each choice as the answer. A method the model lacks raises ``ModelError``.
    """

    backend: ClassVar[str]
    #: What the backend can do (``Capability``); checked against its methods when the class is
    #: defined. Declaring ``score`` gives ``classify`` too (from the scores).
    capabilities: frozenset[str] = frozenset()
    options_model: ClassVar[type[BaseModel]] = NoOptions
    #: False for backends that need no weights (the mock): the name is then not resolved.
    locates_weights: ClassVar[bool] = True
    #: Whether ``generate`` honours a ``Constraint`` (a JSON Schema, regex or label set): the
    #: worker passes one per prompt; a workflow that needs one on a backend without is refused
    #: when it loads.
    structured_outputs: ClassVar[bool] = False
    #: Whether the backend applies LoRA adapters on a shared base (``adapters.py``): a workflow
    #: naming an adapter on a backend without is refused when it loads.
    serves_adapters: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check a class's declared ``capabilities``: known names, and the promised methods
        defined (a typo or a missing method fails when the plugin is imported, not mid-run)."""
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("capabilities")
        if declared is None:
            declared = _undeclared(cls)
            if declared is None:
                return
        unknown = sorted(set(declared) - CAPABILITIES)
        if unknown:
            raise TypeError(f"{cls.__name__}.capabilities: unknown {unknown} (known: {sorted(CAPABILITIES)})")
        for capability in declared:
            method = _METHODS.get(capability)
            if method and getattr(cls, method, None) is getattr(Model, method, None):
                raise TypeError(f"{cls.__name__} declares '{capability}' but defines no {method}()")
        cls.capabilities = frozenset(declared) | ({"classify"} if "score" in declared else set())

    @classmethod
    def prepare(cls, source: str, options: Any) -> str:
        """Make ready what ``load`` reads and return where it is (the ``onnx`` backend exports a
        PyTorch folder on first use). The pool calls it before ``load``; by default, nothing."""
        return source

    @classmethod
    def prepare_adapter(cls, adapter: Path, options: Any) -> tuple[str | None, Path]:
        """Make ready a LoRA adapter folder for this backend: (the base to load it on, None for
        the base the spec names; the folder ``add_adapter`` reads). By default, as it is."""
        return None, adapter

    @classmethod
    @abstractmethod
    def load(cls, name: str, source: str, options: Any) -> Model:
        """Load from ``source`` (a folder or hub id) with validated ``options``."""

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        raise ModelError(f"model '{self.name}' ({self.backend}) cannot generate text")

    def classify(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> list[list[float]]:
        """By default, a softmax over the labels' answer log-likelihoods (``score``)."""
        if not self.can("score"):
            raise ModelError(f"model '{self.name}' ({self.backend}) cannot classify")
        return [softmax(row) for row in self.score(prompts, labels)]

    def score(
        self, prompts: Sequence[Prompt], choices: Sequence[str], mean: bool = False
    ) -> list[list[float]]:
        raise ModelError(f"model '{self.name}' ({self.backend}) cannot score choices")

    def check_labels(self, labels: Sequence[str]) -> None:  # noqa: B027 - optional hook
        """Raise ``ModelError`` if this model cannot tell ``labels`` apart (a classifier whose
        head lacks one). Called when a workflow loads, before any node runs."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the model holds (weights, native sessions, device memory). The pool
        calls it once, when it closes, after the model's worker has stopped; the model is not
        called again."""

    def inference(self) -> AbstractContextManager[Any]:
        """The context the model's worker runs it in (PyTorch backends: inference mode)."""
        return nullcontext()

    def can(self, capability: Capability) -> bool:
        """Whether the model declares ``capability`` (see ``Capability``)."""
        return capability in self.capabilities


def _undeclared(cls: type[Model]) -> frozenset[str] | None:
    """A class that declares no capabilities, where nothing above it did either, but defines
    the methods: what it defines, with a warning (plugins written before declarations)."""
    if any("capabilities" in vars(k) for k in cls.__mro__[1:] if k is not Model):
        return None
    found = frozenset(c for c, m in _METHODS.items() if getattr(cls, m, None) is not getattr(Model, m, None))
    if not found:
        return None
    warnings.warn(
        f"{cls.__name__} does not declare its capabilities: add "
        f"capabilities = frozenset({sorted(found)}) (read from its methods for now)",
        DeprecationWarning,
        stacklevel=3,
    )
    return found


def softmax(scores: Sequence[float]) -> list[float]:
    """Probabilities from log-likelihoods, stable for very negative ones."""
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


class StreamingModel(Model):
    """A model whose ``generate`` and ``generate_stream`` (``StreamsText``) are one method,
    ``_generate``, with or without a text sink."""

    capabilities = frozenset({"generate", "stream"})

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        return self._generate(prompts, settings, None)

    def generate_stream(
        self, prompts: Sequence[Prompt], settings: GenerationSettings, on_text: TextSink
    ) -> list[str]:
        """``generate``, handing ``on_text(index, new text)`` each answer as it grows."""
        return self._generate(prompts, settings, on_text)

    @abstractmethod
    def _generate(
        self, prompts: Sequence[Prompt], settings: GenerationSettings, on_text: TextSink | None
    ) -> list[str]: ...


@dataclass(frozen=True)
class ModelAlias:
    """A short model name. ``locate`` returns the model folder, preparing it on first use."""

    name: str
    locate: Callable[[], Path]
    backend: str = "hf-causal"
    description: str = ""
