"""``Workflow``: the Python face of a workflow file (load, validate, run, round-trip)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..documents import collector_paused, parse_yaml, read_text
from ..errors import WorkflowError
from ..models.resolve import ModelPool
from ..plugins import Components, installed_components
from ..validation import validate_document
from .batch import BatchReport, Executor, Item, LocalExecutor, run_file, run_many
from .cache import CacheChoice, answer_cache
from .graph import WorkflowGraph
from .mermaid import mermaid
from .runner import NodeResult, Runner, RunResult
from .spec import WorkflowSpec


def parse_spec(data: Any, source: str) -> WorkflowSpec:
    """Validate a parsed document; errors become one-line ``WorkflowError``s naming the field."""
    if not isinstance(data, dict):
        raise WorkflowError(f"{source}: a workflow must be a mapping with 'name' and 'nodes'")
    return validate_document(WorkflowSpec, data, source, WorkflowError)


class Workflow:
    """A validated workflow, ready to run.

    >>> wf = Workflow.from_yaml("workflows/article.yaml")
    >>> result = wf.run(topic="How honeybees communicate")
    >>> result["article"]

    Its models come from ``pool`` (an ``Engine``'s, shared with whatever else uses it), else
    from a pool of its own over ``components`` (default: the installed plugins'), which
    ``close()`` releases.
    """

    def __init__(
        self,
        spec: WorkflowSpec,
        *,
        source: str = "<workflow>",
        components: Components | None = None,
        pool: ModelPool | None = None,
    ) -> None:
        self.spec = spec
        self.source = source
        self._owns_pool = pool is None
        self.pool = pool if pool is not None else ModelPool(components or installed_components())
        self.graph = WorkflowGraph(spec, self.pool.components, self.pool, source)

    def close(self) -> None:
        """Release the models of the workflow's own pool (a pool handed in is left to its owner)."""
        if self._owns_pool:
            self.pool.close()

    def __enter__(self) -> Workflow:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>", **kwargs: Any) -> Workflow:
        return cls(parse_spec(dict(data), source), source=source, **kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path, **kwargs: Any) -> Workflow:
        path = Path(path)
        return cls.from_yaml_text(read_text(path, "workflow file", WorkflowError), source=str(path), **kwargs)

    @classmethod
    def from_yaml_text(cls, text: str, source: str = "<yaml>", **kwargs: Any) -> Workflow:
        with collector_paused():
            return cls(parse_spec(parse_yaml(text, source, WorkflowError), source), source=source, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return self.spec.model_dump(mode="json", exclude_unset=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def mermaid(self) -> str:
        return mermaid(self.graph)

    def runner(self, cache: CacheChoice = True) -> Runner:
        """A runner over this workflow's graph. ``cache``: True for the default answer cache,
        a folder or ``AnswerCache`` for another, False for none."""
        return Runner(self.graph, self.pool, cache=answer_cache(cache))

    def run(
        self,
        inputs: Mapping[str, Any] | None = None,
        /,
        *,
        on_node_done: Callable[[NodeResult], None] | None = None,
        cache: CacheChoice = True,
        **kwargs: Any,
    ) -> RunResult:
        """Run once. Inputs come as a mapping, as keywords, or both."""
        return self.runner(cache).run({**(inputs or {}), **kwargs}, on_node_done)

    def run_many(
        self,
        records: Iterable[Mapping[str, Any] | Item],
        *,
        batch_size: int = 8,
        cache: CacheChoice = True,
        executor: Executor | None = None,
        on_item_done: Callable[[RunResult], None] | None = None,
        progress: bool = False,
    ) -> Iterator[RunResult]:
        """Run many inputs, ``batch_size`` per model call; yields each result as its batch
        finishes. Failures stay with their item (``result.error``) and never stop the rest.
        ``on_item_done(result)`` is called as each finishes; ``progress=True`` shows a bar
        (items done, failures, rate) on standard error.

        >>> for r in wf.run_many([{"id": 1, "topic": "bees"}, {"id": 2, "topic": "ants"}]):
        ...     print(r.id, r.error or r["article"])
        """
        results = run_many(records, executor or self.executor(cache=cache), batch_size=batch_size)
        return _reported(results, on_item_done, progress, getattr(records, "__len__", None))

    def run_file(
        self,
        inputs: str | Path,
        output: str | Path,
        *,
        batch_size: int = 8,
        resume: bool = False,
        cache: CacheChoice = True,
        executor: Executor | None = None,
        **callbacks: Any,
    ) -> BatchReport:
        """Run each line of a JSONL file; append one row per input to ``output``."""
        executor = executor or self.executor(cache=cache)
        return run_file(inputs, output, executor, batch_size=batch_size, resume=resume, **callbacks)

    def executor(
        self,
        kind: str = "local",
        *,
        cache: CacheChoice = True,
        address: str | None = None,
        workers: int | None = None,
    ) -> Executor:
        """Where batches run: ``local`` (this process) or ``ray`` (workers on a Ray cluster;
        a local one when ``address`` is None)."""
        if kind == "local":
            return LocalExecutor(self.runner(cache))
        if kind == "ray":
            from .ray_executor import RayExecutor

            self._check_shippable()

            answers = answer_cache(cache)
            folder = str(answers.folder) if answers else None
            make_runner = functools.partial(runner_from_dict, self.to_dict(), self.source, folder)
            return RayExecutor(make_runner, address=address, workers=workers)
        raise WorkflowError(f"unknown executor '{kind}' (known: local, ray)")

    def _check_shippable(self) -> None:
        """Ray workers rebuild the workflow from its spec with the plugins installed where they
        run: a model handed in from code cannot go with it."""
        added = [spec.name for spec in self.graph.models() if self.pool.added(spec) is not None]
        if added:
            raise WorkflowError(
                f"{self.source}: model '{added[0]}' was handed in with pool.add and cannot go to Ray "
                "workers, which load the workflow's models themselves; use the local executor"
            )


def runner_from_dict(spec: dict[str, Any], source: str, cache: str | None) -> Runner:
    """The runner of the workflow ``spec`` with the answer cache in ``cache`` (or none): what
    a batch worker on another process or machine builds."""
    return Workflow.from_dict(spec, source=source).runner(cache or False)


def _reported(
    results: Iterator[RunResult],
    on_item_done: Callable[[RunResult], None] | None,
    progress: bool,
    size: Callable[[], int] | None,
) -> Iterator[RunResult]:
    """``results``, each handed to ``on_item_done`` and counted on a progress bar first."""
    if not progress and on_item_done is None:
        yield from results
        return
    from tqdm import tqdm

    failed = 0
    with tqdm(total=size() if size else None, unit="item", disable=not progress, dynamic_ncols=True) as bar:
        for result in results:
            failed += result.error is not None
            bar.set_postfix(failed=failed, refresh=False)
            bar.update()
            if on_item_done is not None:
                on_item_done(result)
            yield result
