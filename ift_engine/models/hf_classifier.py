"""The ``hf-classifier`` backend: a transformers sequence classifier giving label probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ModelError
from ..templates import last_user_text
from .base import Model, Prompt
from .torch_utils import Device, DType, inference_mode, load_pretrained, release_torch_model

if TYPE_CHECKING:  # imported lazily: see torch_utils
    from transformers import PreTrainedTokenizerBase


class ClassifierOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: Device = "auto"
    dtype: DType = "auto"
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(512, ge=8)
    label_map: dict[str, str] = Field(
        default_factory=dict, description="model label -> label name used by templates"
    )


class HFClassifier(Model):
    backend = "hf-classifier"
    capabilities = frozenset({"classify"})
    options_model = ClassifierOptions

    def __init__(
        self,
        name: str,
        model: Any,  # a transformers model, or an ONNX session with its interface (ort.py)
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 32,
        max_length: int = 512,
        label_map: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = model.device
        id2label = model.config.id2label
        label_map = label_map or {}
        self.model_labels = [label_map.get(str(id2label[i]), str(id2label[i])) for i in range(len(id2label))]

    @classmethod
    def load(cls, name: str, source: str, options: ClassifierOptions) -> HFClassifier:
        from transformers import AutoModelForSequenceClassification

        model, tokenizer = load_pretrained(
            AutoModelForSequenceClassification, "classifier", name, source, options.device, options.dtype
        )
        return cls(name, model, tokenizer, options.batch_size, options.max_length, options.label_map)

    def inference(self) -> AbstractContextManager[Any]:
        return inference_mode()

    def check_labels(self, labels: Sequence[str]) -> None:
        self.label_indices(labels)

    def label_indices(self, labels: Sequence[str]) -> list[int]:
        """Where each wanted label sits in the model's head (matched case-insensitively)."""
        lowered = [label.lower() for label in self.model_labels]
        missing = [label for label in labels if label.lower() not in lowered]
        if missing:
            raise ModelError(
                f"classifier '{self.name}' has no label '{missing[0]}' "
                f"(its labels: {', '.join(self.model_labels)})"
            )
        return [lowered.index(label.lower()) for label in labels]

    def close(self) -> None:
        release_torch_model(self)

    def classify(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> list[list[float]]:
        """Softmax over the model's head, restricted to ``labels`` and renormalised."""
        import torch

        columns = torch.tensor(self.label_indices(labels))
        texts = [last_user_text(p) for p in prompts]  # a classifier reads the user's text
        rows: list[list[float]] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                    split_special_tokens=True,  # user text: "[SEP]" typed stays text
                ).to(self.device)
                probs = self.model(**enc).logits.float().softmax(-1).cpu()[:, columns]
                rows.extend((probs / probs.sum(-1, keepdim=True)).tolist())
        return rows
