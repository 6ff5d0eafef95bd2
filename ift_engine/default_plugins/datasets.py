"""Built-in dataset sources."""

from __future__ import annotations

from ..hookspecs import Register, hookimpl
from ..sources import DatasetSource, HubDataset, SnowNLPSentiment


@hookimpl
def register_datasets(register: Register[type[DatasetSource]]) -> None:
    register(SnowNLPSentiment)
    register(HubDataset)
