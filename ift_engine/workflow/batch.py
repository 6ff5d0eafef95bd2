"""Batch runs: many inputs through one workflow, in batches, to a resumable JSONL file.

``run_many`` turns records into ``RunResult``s, batch by batch, on an executor (this process,
or Ray workers). ``run_file`` reads a JSONL file of inputs, skips the ids already in the output
file (``resume``), and appends one flushed row per finished input, so a run killed at any
moment and resumed writes every id exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import InputError, WorkflowError
from .rows import BadLine, Item, RowFile, check_not_inputs, completed_ids, id_key, open_inputs, read_inputs
from .runner import ItemError, Runner, RunResult


class Executor(Protocol):
    """Runs batches of items and yields each batch's results (in any order across batches)."""

    def map_batches(self, batches: Iterable[list[Item]]) -> Iterator[list[RunResult]]: ...


def check_item(
    runner: Runner, item_id: Any, inputs: dict[str, Any]
) -> tuple[dict[str, Any] | None, RunResult]:
    """The checked inputs, or None and a failed result saying what is wrong with them."""
    result = RunResult(runner.graph.spec.name, inputs, id=item_id)
    try:
        return runner.check_inputs(inputs), result
    except InputError as exc:
        result.error = ItemError(None, exc.message)
        return None, result


def run_items(runner: Runner, batch: list[Item]) -> list[RunResult]:
    """One batch: bad inputs fail alone, the rest run together."""
    failed, ready = [], []
    for item_id, inputs in batch:
        values, result = check_item(runner, item_id, inputs)
        if values is None:
            failed.append(result)
        else:
            ready.append((item_id, values))
    return failed + (runner.run_batch(ready) if ready else [])


@dataclass
class LocalExecutor:
    """Batches run one after another in this process; models load once."""

    runner: Runner

    def map_batches(self, batches: Iterable[list[Item]]) -> Iterator[list[RunResult]]:
        self.runner.load_models()
        for batch in batches:
            yield run_items(self.runner, batch)


def split_record(record: Any, index: int) -> Item:
    """A record's id (its ``id`` field, else its position) and its inputs."""
    if not isinstance(record, Mapping):
        raise WorkflowError(
            f"record {index}: an input record must be a JSON object, not {type(record).__name__}"
        )
    inputs = dict(record)
    return inputs.pop("id", index), inputs


def batched(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_many(
    records: Iterable[Mapping[str, Any] | Item], executor: Executor, *, batch_size: int = 8
) -> Iterator[RunResult]:
    """Yield one ``RunResult`` per record as its batch finishes. A record is a dict of inputs
    (with an optional ``id``; the default id is its position) or an ``(id, inputs)`` pair."""
    if batch_size < 1:
        raise WorkflowError(f"batch size must be at least 1, not {batch_size}")
    items = (r if isinstance(r, tuple) else split_record(r, i) for i, r in enumerate(records, start=1))
    for results in executor.map_batches(batched(items, batch_size)):
        yield from results


# -- files ------------------------------------------------------------------------------------


@dataclass
class BatchReport:
    """What a batch run did: ``done`` rows written (``failed`` of them with an error),
    ``skipped`` inputs already in the output, ``bad_lines`` inputs that could not be read."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return self.done - self.failed

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.bad_lines

    def summary(self, output: str) -> str:
        """``5 succeeded, 1 failed, 2 skipped (already in OUT), 1 bad input line``."""
        parts = [f"{self.succeeded} succeeded", f"{self.failed} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped (already in {output})")
        if self.bad_lines:
            parts.append(f"{len(self.bad_lines)} bad input line{'s' if len(self.bad_lines) != 1 else ''}")
        return ", ".join(parts)


def run_file(
    inputs: str | Path,
    output: str | Path,
    executor: Executor,
    *,
    batch_size: int = 8,
    resume: bool = False,
    on_bad_line: Callable[[BadLine], None] | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> BatchReport:
    """Run every line of ``inputs`` (a file, a pipe, or ``-`` for standard input) and append
    one row per input to ``output`` (see ``rows.RowFile`` for what is guaranteed)."""
    check_not_inputs(output, inputs)
    stream = open_inputs(inputs)  # before the output is touched: a missing file creates nothing
    try:
        rows = RowFile(output, resume)
    except BaseException:
        stream.close()
        raise
    report = BatchReport()

    def pending() -> Iterator[Item]:
        for entry in read_inputs(stream):
            if isinstance(entry, BadLine):
                report.bad_lines.append(entry)
                if on_bad_line:
                    on_bad_line(entry)
            elif id_key(entry[0]) in rows.done:
                report.skipped += 1
            else:
                yield entry

    failed = True
    try:
        for result in run_many(pending(), executor, batch_size=batch_size):
            rows.write(result.row())
            report.done += 1
            report.failed += result.error is not None
            if on_result:
                on_result(result)
        failed = False
    finally:
        stream.close()
        rows.close(failed=failed)
    return report


__all__ = [
    "BadLine",
    "BatchReport",
    "Executor",
    "LocalExecutor",
    "completed_ids",
    "read_inputs",
    "run_file",
    "run_many",
]
