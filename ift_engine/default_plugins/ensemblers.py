"""Built-in ensemblers."""

from __future__ import annotations

from ..ensemble import Ensembler, HardVote, LogitMean, Rerank, SoftVote, TokenAverage
from ..hookspecs import Register, hookimpl


@hookimpl
def register_ensemblers(register: Register[type[Ensembler]]) -> None:
    for ensembler in (SoftVote, LogitMean, HardVote, TokenAverage, Rerank):
        register(ensembler)
