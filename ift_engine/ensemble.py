"""Ensembles: several member models combined into one model.

An ensemble is itself a ``Model`` (same ``generate`` / ``classify``), so a workflow node uses it
exactly as it uses one model. Built-in ensemblers:

- ``soft_vote``: weighted mean of the members' label probabilities (sklearn's soft voting).
- ``logit_mean``: weighted mean of the members' log-probabilities, then softmax: a product of
  experts. Unlike ``soft_vote`` one confident member can veto a label (its log-probability goes
  to minus infinity), and the result is sharper where members agree.
- ``hard_vote``: weighted majority of the members' predicted labels, ties to the lowest label
  index (sklearn's hard voting); the returned "probabilities" are the weighted vote shares.
- ``token_average``: decoding where each step averages the members' next-token probabilities
  (members share a tokenizer, each keeps its own KV cache).
- ``rerank``: each member generates a candidate; the one with the highest mean per-token
  log-likelihood averaged over all members wins.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, cast

from .errors import ModelError
from .models.base import DecodesSteps, GenerationSettings, Model, Prompt
from .models.resolve import check_weights

#: What an ensembler combines: label probabilities, or generated text.
Combines = Literal["classify", "generate"]


class Ensembler(ABC):
    """Builds an ensemble model from members and their weights. Register subclasses through
    ``register_ensemblers``; ``name`` is how workflows refer to them."""

    name: ClassVar[str]
    #: "classify" for label ensembles, "generate" for free-text ones.
    capability: ClassVar[Combines]

    def __init__(self, members: Sequence[Model], weights: Sequence[float] | None = None) -> None:
        if not members:
            raise ModelError(f"ensemble '{self.name}' needs at least one member")
        weights = list(weights) if weights is not None else [1.0] * len(members)
        check_weights(weights, len(members))
        missing = [m.name for m in members if not m.can(self.capability)]
        if missing:
            raise ModelError(f"ensemble '{self.name}': member '{missing[0]}' cannot {self.capability}")
        total = sum(weights)
        self.members = list(members)
        #: As given: voting on these keeps exact ties exact, as sklearn does.
        self.raw_weights = [float(w) for w in weights]
        self.weights = [w / total for w in weights]

    @abstractmethod
    def model(self, name: str) -> Model:
        """The ensemble as a model."""


class EnsembleModel(Model):
    """A model whose answers combine its members'. Label ensembles also give each member's
    probabilities (``classify_with_members``), text ensembles each prompt's details
    (``generate_with_members``), for the run trace and the page."""

    backend = "ensemble"
    locates_weights = False

    def __init__(self, name: str, ensembler: Ensembler) -> None:
        super().__init__(name)
        self.ensembler = ensembler
        self.members = ensembler.members

    @classmethod
    def load(cls, name: str, source: str, options: Any) -> Model:  # pragma: no cover - built by the pool
        raise ModelError("ensembles are built from their members, not loaded")


# ---- label ensembles -------------------------------------------------------------------


def _member_probabilities(
    members: Sequence[Model], prompts: Sequence[Prompt], labels: Sequence[str]
) -> list[Any]:
    import numpy as np

    return [np.asarray(m.classify(prompts, labels), dtype=float) for m in members]


class LabelEnsembleModel(EnsembleModel):
    capabilities = frozenset({"classify", "members"})

    def check_labels(self, labels: Sequence[str]) -> None:
        for member in self.members:
            member.check_labels(labels)

    def classify(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> list[list[float]]:
        rows, _ = self.classify_with_members(prompts, labels)
        return rows

    def classify_with_members(
        self, prompts: Sequence[Prompt], labels: Sequence[str]
    ) -> tuple[list[list[float]], list[list[list[float]]]]:
        members = _member_probabilities(self.members, prompts, labels)
        combined = self.ensembler.combine(members)  # type: ignore[attr-defined]
        return combined.tolist(), [m.tolist() for m in members]


class LabelEnsembler(Ensembler):
    capability: ClassVar[Combines] = "classify"

    def model(self, name: str) -> Model:
        return LabelEnsembleModel(name, self)

    @abstractmethod
    def combine(self, probabilities: Sequence[Any]) -> Any:
        """(members x prompts x labels) probabilities -> (prompts x labels)."""


class SoftVote(LabelEnsembler):
    name = "soft_vote"

    def combine(self, probabilities: Sequence[Any]) -> Any:
        import numpy as np

        return np.average(np.stack(probabilities), axis=0, weights=self.raw_weights)


class LogitMean(LabelEnsembler):
    name = "logit_mean"

    def combine(self, probabilities: Sequence[Any]) -> Any:
        import numpy as np

        with np.errstate(divide="ignore"):
            logs = np.log(np.stack(probabilities))
        mean = np.average(logs, axis=0, weights=self.raw_weights)
        mean -= mean.max(axis=-1, keepdims=True)
        exp = np.exp(mean)
        return exp / exp.sum(axis=-1, keepdims=True)


class HardVote(LabelEnsembler):
    name = "hard_vote"

    def combine(self, probabilities: Sequence[Any]) -> Any:
        import numpy as np

        votes = np.stack([p.argmax(axis=-1) for p in probabilities])  # members x prompts
        labels = probabilities[0].shape[-1]
        shares = np.zeros((votes.shape[1], labels))
        for member, weight in enumerate(self.raw_weights):
            shares[np.arange(votes.shape[1]), votes[member]] += weight
        return shares  # argmax picks the lowest index among ties, as sklearn's bincount+argmax


# ---- free-text ensembles ---------------------------------------------------------------


class TextEnsembleModel(EnsembleModel):
    """A free-text ensemble; ``generate_with_members`` also returns per-prompt details."""

    capabilities = frozenset({"generate", "members"})

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        return self.generate_with_members(prompts, settings)[0]

    @abstractmethod
    def generate_with_members(
        self, prompts: Sequence[Prompt], settings: GenerationSettings
    ) -> tuple[list[str], list[Any]]:
        """(answers, one detail per prompt or None) for the run trace."""


class TokenAverageModel(TextEnsembleModel):
    def generate_with_members(
        self, prompts: Sequence[Prompt], settings: GenerationSettings
    ) -> tuple[list[str], list[Any]]:
        from .models.token_average import average_decode

        members = cast(list[DecodesSteps], self.members)  # checked by TokenAverage when built
        texts = average_decode(members, self.ensembler.weights, prompts, settings)
        return texts, [None] * len(prompts)


class TokenAverage(Ensembler):
    name = "token_average"
    capability: ClassVar[Combines] = "generate"

    def __init__(self, members: Sequence[Model], weights: Sequence[float] | None = None) -> None:
        super().__init__(members, weights)
        vocabularies = []
        for member in self.members:
            if not member.can("steps"):
                raise ModelError(
                    f"token_average: member '{member.name}' ({member.backend}) cannot decode step by "
                    "step; use hf-causal or onnx causal LMs"
                )
            vocabularies.append(cast(DecodesSteps, member).tokenizer.get_vocab())
        if any(v != vocabularies[0] for v in vocabularies[1:]):
            odd = next(m.name for m, v in zip(self.members, vocabularies) if v != vocabularies[0])
            raise ModelError(
                f"token_average: member '{odd}' has a different tokenizer; all members must share one"
            )

    def model(self, name: str) -> Model:
        return TokenAverageModel(name, self)


class RerankModel(TextEnsembleModel):
    def generate_with_members(
        self, prompts: Sequence[Prompt], settings: GenerationSettings
    ) -> tuple[list[str], list[Any]]:
        candidates = [m.generate(prompts, settings) for m in self.members]  # members x prompts
        winners, details = [], []
        for p, prompt in enumerate(prompts):
            options = [candidates[m][p] for m in range(len(self.members))]
            # Mean per-token log-likelihood of every candidate under every member, weighted.
            scores = [0.0] * len(options)
            for member, weight in zip(self.members, self.ensembler.weights):
                row = member.score([prompt], options, mean=True)[0]
                scores = [s + weight * r for s, r in zip(scores, row)]
            best = max(range(len(options)), key=scores.__getitem__)
            winners.append(options[best])
            writers = [m.name for m in self.members]
            details.append({"candidates": options, "members": writers, "scores": scores, "winner": best})
        return winners, details


class Rerank(Ensembler):
    name = "rerank"
    capability: ClassVar[Combines] = "generate"

    def __init__(self, members: Sequence[Model], weights: Sequence[float] | None = None) -> None:
        super().__init__(members, weights)
        missing = [m.name for m in self.members if not m.can("score")]
        if missing:
            raise ModelError(f"rerank: member '{missing[0]}' cannot score candidates")

    def model(self, name: str) -> Model:
        return RerankModel(name, self)
