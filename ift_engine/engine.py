"""``Engine``: what one program's use of ift_engine shares, held in one object.

An engine holds the components of the installed plugins (templates, parsers, model backends,
aliases, augmenters, sources, ensemblers) and one model pool, so each model loads once whichever
workflows, evaluations or chats use it. No components or pools are kept for the process: the
``ift`` command builds one engine per command, a service builds its own, and a test builds one
with its own models.

    from ift_engine import Engine, MockModel

    with Engine() as engine:
        engine.pool.add("writer", MockModel("writer", default="- Dances"))  # nodes naming it use it
        flow = {**engine.workflow("workflows/article.yaml").to_dict(), "model": "writer"}
        outline = engine.workflow(flow).run(topic="bees")["outline"]  # ['Dances']

Calls made without an engine (``Workflow.from_yaml(path)``, ``train(...)``) build the components
afresh from the installed plugins, and a workflow built that way has a pool of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .errors import IftError
from .models.resolve import ModelPool
from .plugins import Components, installed_components

if TYPE_CHECKING:
    from .evaluation import Evaluation, EvaluationSpec
    from .training import TrainResult, TrainSpec
    from .training.dry_run import DryRun
    from .workflow import Workflow


class Engine:
    """The components of the installed plugins (or ``components``) and one model pool."""

    def __init__(self, components: Components | None = None) -> None:
        self.components = components if components is not None else installed_components()
        self.pool = ModelPool(self.components)

    def workflow(self, source: str | Path | Mapping[str, Any], /) -> Workflow:
        """A workflow from a YAML file or a mapping, run with this engine's models."""
        from .workflow import Workflow

        if self.pool.closed:
            raise IftError("this engine is closed (its models were released); build a new Engine")

        if isinstance(source, Mapping):
            return Workflow.from_dict(source, pool=self.pool)
        return Workflow.from_yaml(source, pool=self.pool)

    def train(
        self, config: TrainSpec | Mapping[str, Any] | str | Path | None = None, **kwargs: Any
    ) -> TrainResult:
        """``ift_engine.train`` with this engine's templates, sources and models."""
        from .training import train

        return train(config, components=self.components, **kwargs)

    def dry_run(self, spec: TrainSpec, time_steps: bool = True) -> DryRun:
        """What training ``spec`` would do (``ift train --dry-run``); nothing is written."""
        from .training.dry_run import dry_run

        return dry_run(spec, time_steps, components=self.components)

    def evaluate(
        self,
        spec: EvaluationSpec | Mapping[str, Any] | str | Path,
        *,
        on_progress: Callable[[int], None] | None = None,
        on_start: Callable[[int], None] | None = None,
        limit: int | None = None,
    ) -> Evaluation:
        """Run an evaluation (``ift eval``) with this engine's components and models."""
        from .evaluation import run_eval

        return run_eval(spec, on_progress, on_start, limit, components=self.components, pool=self.pool)

    def close(self) -> None:
        """Release every model the pool loaded (and those handed in with ``pool.add``)."""
        self.pool.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["Engine"]
