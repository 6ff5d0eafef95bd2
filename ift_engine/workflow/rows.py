"""The JSONL files of batch runs: input lines in, result rows out.

Inputs are read as bytes, line by line, from a file, a pipe, a FIFO or standard input (``-``):
a line that is not UTF-8, not JSON, nested too deeply, not an object, or a repeated id is a
``BadLine`` with its number, and the rest run.

The output is append-only. ``RowFile`` locks it (an advisory ``flock`` on the file itself, so no
lock file is left behind; a second process fails at once), refuses a non-empty file unless
resuming, and on resume reads back the finished ids without deleting any row: a line that is not
a result row stops the run with its line number and the file untouched. Only a last line cut
short by a killed process is removed. Each row is one ``write`` of one line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

from ..documents import MAX_DEPTH, check_depth, describe_size, loads_json, open_regular
from ..errors import WorkflowError
from ..files import OutputError, check_output_file, describe_os_error, json_text, lock_file, make_parent

Item = tuple[Any, dict[str, Any]]  # (id, raw inputs)
#: A longer input line is a bad line (read past in chunks, never held whole in memory).
MAX_LINE_BYTES = 16 * 2**20
#: A "line" this long is no JSONL input at all: the run stops rather than read for ever.
MAX_SKIPPED_BYTES = 256 * 2**20
#: The longest output row written or read back on resume. An id comes from an input line, so
#: a failed row (the id and a short message) always fits.
MAX_ROW_BYTES = 2 * MAX_LINE_BYTES
LINE_BREAKS = ("\u0085", "\u2028", "\u2029")
STDIN = "-"
#: How every row starts (``RunResult.row`` puts the id first): a last line that starts so and
#: does not parse was cut short by a killed writer.
ROW_START = b'{"id": '


@dataclass
class BadLine:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def id_key(item_id: Any) -> str:
    """An id as the JSON text rows are matched by; ``ValueError`` when it cannot be written."""
    try:
        return json.dumps(item_id, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"the id cannot be written as JSON ({exc})") from None


def _parse_line(raw: bytes, offset: int) -> Any:
    """One input line as JSON; ``ValueError`` saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (at byte offset {offset + exc.start}); save the file as UTF-8") from None
    try:
        if offset == 0:
            text = text.removeprefix("\ufeff")  # a byte-order mark some editors put first
        return check_depth(loads_json(text), "line", WorkflowError)
    except WorkflowError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


def open_inputs(inputs: str | Path) -> IO[bytes]:
    """The inputs as a binary stream: ``-`` is standard input; pipes and FIFOs work."""
    if str(inputs) == STDIN:
        try:
            return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
        except (AttributeError, OSError):  # no standard input at all (closed: `<&-`)
            raise WorkflowError(
                "--inputs -: standard input is closed; pipe the inputs in or give a file"
            ) from None
    path = Path(inputs)
    if path.is_dir():
        raise WorkflowError(f"{path}: the inputs path is a folder; give a JSONL file")
    try:
        return path.open("rb")
    except OSError as exc:
        raise WorkflowError(f"{path}: cannot read the inputs file: {describe_os_error(exc)}") from None


def _lines(stream: IO[bytes]) -> Iterator[tuple[bytes | None, int]]:
    """(line, its length in bytes) for each line; a line over ``MAX_LINE_BYTES`` comes as
    (None, length), its bytes skipped in chunks and never held in memory. A line that runs
    past ``MAX_SKIPPED_BYTES`` without a break (``/dev/zero``, a binary file) stops the read."""
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line, len(line)
            continue
        length = len(line)
        while not line.endswith(b"\n"):
            if length > MAX_SKIPPED_BYTES:
                raise WorkflowError(
                    f"an input line runs past {MAX_SKIPPED_BYTES // 2**20} MiB without a line break; the "
                    "inputs must be a JSONL file or stream, one object per line"
                )
            line = stream.readline(1 << 20)
            if not line:
                break
            length += len(line)
        yield None, length


def read_inputs(stream: IO[bytes]) -> Iterator[Item | BadLine]:
    """Each line as ``(id, inputs)`` (the id defaults to the line number), or a ``BadLine``
    saying what is wrong with it. Blank lines are skipped."""
    seen: set[str] = set()
    offset = 0
    with stream:
        for number, (raw, length) in enumerate(_lines(stream), start=1):
            start, offset = offset, offset + length
            if raw is not None and not raw.strip():
                continue
            try:
                if raw is None:
                    raise ValueError(f"longer than {MAX_LINE_BYTES:,} bytes; split it into smaller inputs")
                record = _parse_line(raw, start)
                if not isinstance(record, dict):
                    raise ValueError(f"must be a JSON object of inputs, not {type(record).__name__}")
                inputs = dict(record)
                item_id = inputs.pop("id", number)
                key = id_key(item_id)
            except ValueError as exc:
                yield BadLine(number, str(exc))
                continue
            if key in seen:
                yield BadLine(number, f"duplicate id {key}; ids must be unique")
                continue
            seen.add(key)
            yield item_id, inputs


def is_regular_file(inputs: str | Path) -> bool:
    return str(inputs) != STDIN and Path(inputs).is_file()


def count_lines(path: Path) -> int:
    """Non-blank lines of a regular file (the progress bar's total)."""
    with path.open("rb") as file:
        return sum(1 for line in file if line.strip())


def encode_row(row: dict[str, Any]) -> bytes:
    """One row as a line of UTF-8 JSON. Text that UTF-8 cannot hold (lone surrogates) is
    written as JSON escapes, which read back to the same value. ``ValueError`` when the row
    cannot be written as JSON at all (NaN, nesting too deep)."""
    try:
        text = json_text(row, allow_nan=False)
    except (TypeError, RecursionError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    # Characters that str.splitlines() and some editors take for line breaks are escaped, so
    # every reader sees one row per line (json.dumps already escapes the ASCII ones).
    for char in LINE_BREAKS:
        text = text.replace(char, f"\\u{ord(char):04x}")
    return (text + "\n").encode("utf-8")


def row_line(row: dict[str, Any]) -> bytes:
    """``encode_row``, or, for a result that cannot be a row (not JSON, or a line longer than a
    resume reads back), a failed row saying why."""
    try:
        data = encode_row(row)
    except ValueError as exc:
        problem = f"the result cannot be written as JSON: {exc}"
    else:
        if len(data) <= MAX_ROW_BYTES + 1:  # the line break aside
            return data
        problem = (
            f"the result is {describe_size(len(data))} as a row, over the "
            f"{describe_size(MAX_ROW_BYTES)} a row may hold; ask for shorter outputs"
        )
    error = {"node": None, "message": problem}
    return encode_row({"id": row["id"], "outputs": {}, "error": error, "cached": [], "seconds": 0})


def is_row(value: Any) -> bool:
    """Whether a line read back is a result row (``RunResult.row``): an ``id``, its ``outputs``
    (an object) and its ``error`` (null or an object). Anything else with an id (an input line,
    a note) is not a finished item."""
    return (
        isinstance(value, dict)
        and {"id", "outputs", "error"} <= value.keys()
        and isinstance(value["outputs"], dict)
        and (value["error"] is None or isinstance(value["error"], dict))
    )


def check_not_inputs(output: str | Path, inputs: str | Path) -> None:
    """Refuse an output that is the inputs file itself, by any name (a link, ``/dev/stdin``,
    standard input redirected from it)."""
    try:
        source = os.fstat(0) if str(inputs) == STDIN else os.stat(inputs)
        target = os.stat(output)
    except OSError:  # one of them does not exist (yet), or standard input is closed
        return
    if os.path.samestat(source, target):
        raise OutputError(
            f"{output}: the output is the inputs file {inputs}; results go to another file "
            "(nothing was changed)"
        )


def row_key(line: bytes) -> str | None:
    """The id (as JSON text) of a line that is a result row, else None."""
    try:
        row = json.loads(line)
        return id_key(row["id"]) if is_row(row) else None
    except (ValueError, RecursionError):
        return None


def not_a_row(path: Path, number: int, why: str = "is not a result row") -> OutputError:
    return OutputError(
        f"{path}: line {number} {why}, so nothing was changed; resume only into a file written by "
        "`ift run --output`, or fix or remove that line"
    )


def scan_rows(stream: IO[bytes], path: Path) -> tuple[set[str], int]:
    """(the finished ids, how many leading bytes to keep) of an output file, read one line at a
    time: only the ids are kept, and no line is read past ``MAX_ROW_BYTES`` (no row is longer,
    see ``RowFile.write``). A line that is not a row is an error naming it; only a last row cut
    short is left out."""
    done: set[str] = set()
    position = 0
    for number, line in enumerate(iter(partial(stream.readline, MAX_ROW_BYTES + 1), b""), start=1):
        complete = line.endswith(b"\n")
        if not complete and len(line) > MAX_ROW_BYTES:
            raise not_a_row(path, number, f"is longer than {describe_size(MAX_ROW_BYTES)} (no result row is)")
        key = row_key(line)
        if key is not None:
            done.add(key)
        elif not complete and line.startswith(ROW_START):
            break  # the last line (readline stopped short of the bound): its writer died, it runs again
        elif complete and not line.strip():
            pass
        else:
            raise not_a_row(path, number)
        position += len(line)
    return done, position


class RowFile:
    """The locked, append-only output of a batch run (see the module docstring)."""

    def __init__(self, path: str | Path, resume: bool) -> None:
        self.path = Path(path)
        check_output_file(self.path, "output")
        make_parent(self.path, "output")
        self._created = not self.path.exists()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write the output: {describe_os_error(exc)}") from None
        try:
            self._lock()
            self.done = self._prepare(resume)
        except BaseException:
            self.close(failed=True)
            raise

    def _lock(self) -> None:
        lock_file(
            self._fd,
            f"{self.path}: another process is writing to this output; wait for it to finish or "
            "choose another --output",
        )

    def _prepare(self, resume: bool) -> set[str]:
        size = os.fstat(self._fd).st_size
        if not resume:
            if size:
                raise OutputError(
                    f"{self.path}: the output file exists; pass --resume to continue it, or choose "
                    "another --output (nothing was changed)"
                )
            return set()
        with os.fdopen(os.dup(self._fd), "rb") as stream:  # a second descriptor: closing it keeps ours
            stream.seek(0)
            done, keep = scan_rows(stream, self.path)
        if keep < size:
            os.ftruncate(self._fd, keep)
        elif size and os.pread(self._fd, 1, size - 1) != b"\n":  # a whole row whose newline was not written
            os.write(self._fd, b"\n")
        return done

    def write(self, row: dict[str, Any]) -> None:
        """Append one row with one write and hand it to the OS, so a killed process loses at most
        the row it was writing."""
        data = row_line(row)
        end = os.fstat(self._fd).st_size
        try:
            while data:  # one write() normally; loop in case the OS takes part of it
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            with suppress(OSError):  # a full disk may take part of a row: take it back
                os.ftruncate(self._fd, end)
            raise OutputError(
                f"{self.path}: cannot write the output: {describe_os_error(exc)}; the rows written so far "
                "are kept: free space and run again with --resume"
            ) from None

    def close(self, failed: bool = False) -> None:
        """Release the file; after a failure, remove it if this run created it and wrote nothing."""
        if self._fd < 0:
            return
        if failed and self._created and os.fstat(self._fd).st_size == 0:
            with suppress(OSError):
                self.path.unlink()
        os.close(self._fd)
        self._fd = -1


def completed_ids(path: str | Path) -> set[str]:
    """The ids (as JSON text) already written to an output file; reads only."""
    path = Path(path)
    if not path.exists():
        return set()
    with os.fdopen(open_regular(path, "output file", OutputError), "rb") as stream:
        return scan_rows(stream, path)[0]
