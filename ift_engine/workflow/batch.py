"""Batch runs: many inputs through one workflow, in batches, to a resumable JSONL file.

``run_many`` turns records into ``RunResult``s, batch by batch, on an executor (this process,
or Ray workers). ``run_file`` reads a JSONL file of inputs, skips the ids already in the output
file (``resume``), and appends one flushed row per finished input, so a run killed at any
moment and resumed writes every id exactly once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import WorkflowError
from .runner import ItemError, Runner, RunResult

Item = tuple[Any, dict[str, Any]]  # (id, raw inputs)


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
    except WorkflowError as exc:
        message = str(exc).removeprefix(f"{runner.graph.source}: ")
        result.error = ItemError(None, message)
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
class BadLine:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def read_inputs(path: Path) -> Iterator[Item | BadLine]:
    """Each line of a JSONL file as ``(id, inputs)`` (the id defaults to the line number), or
    a ``BadLine`` saying what is wrong with it. Blank lines are skipped."""
    try:
        file = path.open(encoding="utf-8")
    except OSError as exc:
        raise WorkflowError(f"{path}: cannot read the inputs file: {exc.strerror}") from None
    seen: set[str] = set()
    with file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield BadLine(number, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(record, dict):
                yield BadLine(number, f"must be a JSON object of inputs, not {type(record).__name__}")
                continue
            item_id, inputs = split_record(record, number)
            key = json.dumps(item_id)
            if key in seen:
                yield BadLine(number, f"duplicate id {key}; ids must be unique")
                continue
            seen.add(key)
            yield item_id, inputs


def completed_ids(path: Path) -> set[str]:
    """The ids (as JSON text) already written to an output file. A last line cut short by a
    killed process is removed, so it is run again rather than lost."""
    if not path.exists():
        return set()
    done: set[str] = set()
    with path.open("r+b") as file:
        good = 0
        for line in file:
            try:
                row = json.loads(line)
            except ValueError:
                if line.endswith(b"\n"):
                    raise WorkflowError(
                        f"{path}: line {len(done) + 1} is not a result row; "
                        "resume only into a file written by `ift run --output`"
                    ) from None
                break  # the process died while writing this row
            if not line.endswith(b"\n") or not isinstance(row, dict) or "id" not in row:
                break
            done.add(json.dumps(row["id"]))
            good += len(line)
        file.truncate(good)
    return done


@dataclass
class BatchReport:
    """What a batch run did."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.bad_lines


class RowWriter:
    """Appends one JSON row per result and flushes it to the OS at once: a killed process
    loses at most the row it was writing, which ``completed_ids`` then discards."""

    def __init__(self, path: Path, append: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o644)

    def write(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode()
        while data:  # one write() normally; loop in case the OS takes part of it
            data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        os.close(self._fd)


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
    """Run every line of ``inputs`` and append one row per input to ``output``."""
    inputs, output = Path(inputs), Path(output)
    if output.exists() and not resume and output.stat().st_size:
        raise WorkflowError(f"{output}: the output file exists; pass --resume to continue it or remove it")
    done = completed_ids(output) if resume else set()
    report = BatchReport()

    def pending() -> Iterator[Item]:
        for entry in read_inputs(inputs):
            if isinstance(entry, BadLine):
                report.bad_lines.append(entry)
                if on_bad_line:
                    on_bad_line(entry)
            elif json.dumps(entry[0]) in done:
                report.skipped += 1
            else:
                yield entry

    writer = RowWriter(output, append=resume)
    try:
        for result in run_many(pending(), executor, batch_size=batch_size):
            writer.write(result.row())
            report.done += 1
            report.failed += result.error is not None
            if on_result:
                on_result(result)
    finally:
        writer.close()
    return report


def count_lines(path: Path) -> int:
    """Non-blank lines of a file (the progress bar's total)."""
    try:
        with path.open("rb") as file:
            return sum(1 for line in file if line.strip())
    except OSError:
        return 0


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
