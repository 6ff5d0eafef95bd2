"""Built-in dataset sources."""

from __future__ import annotations

from ..hookspecs import Register, hookimpl
from ..sources import HubDataset, SnowNLPSentiment


@hookimpl
def register_datasets(register: Register) -> None:
    register(SnowNLPSentiment)
    register(HubDataset)
