"""Properties of what guards a user's files, on generated trees, files and lines: overwrite
plans, staging markers, bounded reads, paths under files, and the rows a resume reads back."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ift_engine import documents
from ift_engine.errors import WorkflowError
from ift_engine.files import (
    STAGING_MARKER,
    OutputError,
    check_output_folder,
    check_under_folder,
    folder_entries,
    make_parent,
    read_json_mapping,
    remove_dead_staging,
    staging_folder,
    write_manifest,
)
from ift_engine.workflow import rows
from ift_engine.workflow.rows import ROW_START, id_key, row_key, row_line, scan_rows

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANIFEST = "ift_model.json"

names = st.sampled_from(["a", "b", "sub", "x.bin", ".hidden", "é", "model"])
relative_paths = st.lists(names, min_size=1, max_size=3).map(lambda parts: "/".join(parts))


@contextmanager
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def plant(root: Path, paths: list[str], text: str) -> None:
    """Files at ``paths`` under ``root``; a path whose place is taken (a file where a folder is
    meant, or the reverse) is passed over."""
    for relative in paths:
        path = root / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text(text)
        except (NotADirectoryError, FileExistsError, IsADirectoryError):
            pass


def snapshot(root: Path) -> dict[str, str | None]:
    """Every entry under ``root``: a file's text, None for a folder or a link."""
    return {
        entry: (root / entry).read_text()
        if (root / entry).is_file() and not (root / entry).is_symlink()
        else None
        for entry in folder_entries(root)
    }


# -- overwrite plans -----------------------------------------------------------------------------


@PROPERTY
@given(
    written=st.lists(relative_paths, min_size=1, max_size=8),
    added=st.lists(relative_paths, max_size=4),
    listed=st.one_of(st.none(), st.lists(relative_paths, max_size=6)),
)
def test_overwrite_never_plans_to_remove_an_entry_its_manifest_does_not_list(
    written: list[str], added: list[str], listed: list[str] | None
) -> None:
    """A previous output may be replaced (and so removed whole) only when every entry in it is
    listed; otherwise it is refused and left as it was. ``listed`` edits the list by hand."""
    with folder() as root:
        out = root / "out"
        plant(out, written, "engine")
        manifest = write_manifest(out, MANIFEST, {"kind": "test"})
        if listed is not None:  # a list edited by hand: a foreign entry may now look listed
            (out / MANIFEST).write_text(json.dumps({**manifest, "files": [MANIFEST, *listed]}))
        plant(out, added, "user")
        before = snapshot(out)
        files = (read_json_mapping(out / MANIFEST) or {}).get("files", [])
        try:
            check_output_folder(
                out, "test output", previous=lambda f: read_json_mapping(f / MANIFEST), overwrite=True
            )
        except OutputError as exc:
            assert snapshot(out) == before
            assert set(before) - set(files), exc  # refused: something there is not listed
        else:
            assert set(folder_entries(out)) <= set(files)  # all that a replace removes is listed


@PROPERTY
@given(
    written=st.lists(relative_paths, min_size=1, max_size=8),
    added=st.lists(relative_paths, min_size=1, max_size=4),
)
def test_a_manifest_lists_exactly_what_was_there_when_it_was_written(
    written: list[str], added: list[str]
) -> None:
    with folder() as root:
        out = root / "out"
        plant(out, written, "engine")
        expected = {*folder_entries(out), MANIFEST}
        assert set(write_manifest(out, MANIFEST, {"kind": "test"})["files"]) == expected
        plant(out, added, "user")
        new = set(folder_entries(out)) - expected
        with pytest.raises(OutputError) if new else nullcontext():
            check_output_folder(
                out, "test output", previous=lambda f: read_json_mapping(f / MANIFEST), overwrite=True
            )


# -- staging markers -----------------------------------------------------------------------------

marker_texts = st.one_of(
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.builds(
        json.dumps,
        st.dictionaries(
            st.sampled_from(["output", "kind"]), st.sampled_from(["out", "other", "exporting", 1])
        ),
    ),
)


def is_engine_marker(text: str, output: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("output") == output


@PROPERTY
@given(
    engine=st.lists(st.sampled_from(["exporting", "training", "replaced"]), max_size=3),
    user=st.lists(
        st.tuples(
            st.sampled_from(["exporting-1-ab", "training", "replaced-9", "lock", "notes"]),
            st.one_of(st.none(), marker_texts),
        ),
        max_size=4,
        unique_by=lambda pair: pair[0],
    ),
)
def test_only_folders_the_engine_marked_are_removed(
    engine: list[str], user: list[tuple[str, str | None]]
) -> None:
    """User folders named like staging folders survive (with or without a file named like the
    marker, unless it says what the engine's says); every dead staging folder of ``out`` goes."""
    with folder() as root:
        out = root / "out"
        mine = []
        for name, marker in user:
            if marker is not None and is_engine_marker(marker, out.name):
                continue  # that is the engine's marker: such a folder is the engine's by definition
            path = root / f".out.{name}"
            path.mkdir()
            (path / "keep.txt").write_text("user")
            if marker is not None:
                (path / STAGING_MARKER).write_text(marker)
            mine.append(path)
        made = [staging_folder(out, label) for label in engine]
        before = {path: snapshot(path) for path in mine}
        remove_dead_staging(out)
        assert not any(path.exists() for path in made)
        assert {path: snapshot(path) for path in mine} == before
        assert not out.exists()  # nothing moved back: no replaced folder held an output


def test_a_killed_replace_is_moved_back_not_removed() -> None:
    with folder() as root:
        out = root / "out"
        aside = staging_folder(out, "replaced")
        (aside / "out").mkdir()
        (aside / "out" / "model.bin").write_text("previous")
        remove_dead_staging(out)
        assert (out / "model.bin").read_text() == "previous" and not aside.exists()


# -- bounded reads -------------------------------------------------------------------------------


@PROPERTY
@given(size=st.integers(0, 5000), limit=st.integers(0, 3000))
def test_a_bounded_read_never_reads_past_its_bound(size: int, limit: int) -> None:
    with folder() as root:
        path = root / "data"
        data = os.urandom(size)
        path.write_bytes(data)
        read_so_far: list[int] = []
        real_read = os.read

        def read(fd: int, count: int) -> bytes:
            data = real_read(fd, count)
            read_so_far.append(len(data))
            return data

        with mock.patch.object(documents.os, "read", read):
            try:
                got = documents.read_bytes(path, "file", WorkflowError, limit=limit)
            except WorkflowError as exc:
                assert size > limit and f"larger than {documents.describe_size(limit)}" in str(exc)
            else:
                assert size <= limit and got == data
        assert sum(read_so_far) <= limit + 1  # at most one byte past the bound, to see that there is more


@PROPERTY
@given(kind=st.sampled_from(["file", "folder", "fifo", "device", "link to a device", "link to a file"]))
def test_only_regular_files_are_opened(kind: str) -> None:
    with folder() as root:
        path, target = root / "thing", root / "target"
        target.write_text("x")
        if kind == "device":
            path = Path("/dev/zero")
        else:
            {
                "file": lambda: path.write_text("x"),
                "folder": path.mkdir,
                "fifo": lambda: os.mkfifo(path),  # no writer: opening must not wait
                "link to a device": lambda: path.symlink_to("/dev/null"),
                "link to a file": lambda: path.symlink_to(target),
            }[kind]()
        try:
            os.close(documents.open_regular(path, "file", WorkflowError))
        except WorkflowError as exc:
            assert kind not in ("file", "link to a file") and str(exc).startswith(f"{path}: the file is ")
        else:
            assert kind in ("file", "link to a file")


# -- paths under files ---------------------------------------------------------------------------


@PROPERTY
@given(files=st.lists(relative_paths, max_size=5), target=relative_paths)
def test_a_parent_is_made_exactly_when_no_file_stands_in_the_way(files: list[str], target: str) -> None:
    with folder() as root:
        plant(root, files, "user")
        path = root / target / "out.json"
        nearest = next(parent for parent in path.parents if os.path.lexists(parent))
        before = snapshot(root)
        try:
            make_parent(path, "output")
        except OutputError as exc:
            assert nearest.is_file(), exc
            assert (
                str(exc) == f"{path}: {nearest} is a file, not a folder; choose another path for the output"
            )
            assert snapshot(root) == before
            with pytest.raises(OutputError):  # and the check made when a command starts agrees
                check_under_folder(path, "output")
        else:
            assert nearest.is_dir() and path.parent.is_dir()


# -- the rows a resume reads back ----------------------------------------------------------------

SMALL_ROWS = 1000  # a row limit that generated results cross (the real one is 32 MiB)
ids = st.one_of(st.integers(-(2**60), 2**60), st.text(max_size=20), st.lists(st.integers(0, 3), max_size=2))
texts = st.text(max_size=60)
long_texts = st.one_of(texts, st.integers(0, 2 * SMALL_ROWS).map("y".__mul__))
results = st.fixed_dictionaries(
    {
        "id": ids,
        "outputs": st.dictionaries(
            st.text(max_size=5), st.one_of(long_texts, st.integers(), st.lists(texts, max_size=2)), max_size=3
        ),
        "error": st.one_of(
            st.none(),
            st.fixed_dictionaries({"node": st.one_of(st.none(), st.text(max_size=5)), "message": texts}),
        ),
        "cached": st.lists(st.text(max_size=5), max_size=2),
        "seconds": st.floats(0, 100),
    }
).map(lambda row: {"id": row["id"], **row})  # as RunResult.row: the id first


@PROPERTY
@given(row=results, small=st.booleans())
def test_every_row_written_is_read_back_as_finished(row: dict[str, Any], small: bool) -> None:
    """What the writer writes a resume takes as finished, whatever the text; a result too long
    for a row is written as a failed row that fits (``small``: a row limit results cross)."""
    with mock.patch.object(rows, "MAX_ROW_BYTES", SMALL_ROWS if small else rows.MAX_ROW_BYTES):
        line = row_line(row)
        assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.startswith(ROW_START)
        assert len(line) <= rows.MAX_ROW_BYTES + 1
        assert row_key(line) == id_key(row["id"])
        if json.loads(line) != json.loads(json.dumps(row)):
            assert "a row may hold" in json.loads(line)["error"]["message"]


@PROPERTY
@given(
    value=st.dictionaries(
        st.sampled_from(["id", "outputs", "error", "note", "topic"]),
        st.one_of(st.none(), st.integers(), texts, st.just({}), st.lists(st.integers(), max_size=2)),
    )
)
def test_only_a_line_of_a_rows_shape_counts_as_finished(value: dict[str, Any]) -> None:
    shaped = (
        {"id", "outputs", "error"} <= value.keys()
        and isinstance(value["outputs"], dict)
        and (value["error"] is None or isinstance(value["error"], dict))
    )
    key = row_key(json.dumps(value).encode() + b"\n")
    assert (key is not None) == shaped
    assert key is None or key == id_key(value["id"])


line_kinds = st.one_of(
    st.tuples(st.just("row"), results),
    st.tuples(st.just("blank"), st.sampled_from([b"\n", b"   \n", b"\r\n"])),
    st.tuples(
        st.just("foreign"),
        st.sampled_from([b"[1, 2]\n", b'{"id": 11, "note": "x"}\n', b"not json\n", b'{"id": 1\n', b"\xff\n"]),
    ),
    st.tuples(st.just("long"), st.integers(0, 50)),
)


def encode(kind: str, item: Any) -> bytes:
    if kind == "row":
        return row_line(item)
    if kind == "long":  # a row's shape, but longer than any row the engine writes
        return b'{"id": 1, "outputs": {"a": "' + b"y" * (SMALL_ROWS + item) + b'"}, "error": null}\n'
    return bytes(item)


#: How the file ends after its last line break: a row cut short (at least its start, not all of
#: it) by a killed writer, a whole row whose line break was not written, or something else.
endings = st.one_of(
    st.none(),
    st.tuples(st.just("cut"), results, st.floats(0, 1)),
    st.tuples(st.just("whole"), results, st.just(0.0)),
    st.tuples(st.just("foreign"), st.sampled_from([b"[1, 2", b"note", b'{"note": 1}', b" "]), st.just(0.0)),
)


def ending_bytes(ending: tuple[str, Any, float]) -> bytes:
    kind, item, fraction = ending
    if kind == "foreign":
        return bytes(item)
    whole = row_line(item)
    return (
        whole[:-1]
        if kind == "whole"
        else whole[: len(ROW_START) + int(fraction * (len(whole) - 2 - len(ROW_START)))]
    )


@PROPERTY
@given(lines=st.lists(line_kinds, max_size=10), ending=endings)
def test_a_scan_keeps_every_row_before_a_cut_and_stops_at_the_first_foreign_line(
    lines: list[tuple[str, Any]], ending: tuple[str, Any, float] | None
) -> None:
    with mock.patch.object(rows, "MAX_ROW_BYTES", SMALL_ROWS):
        encoded = [encode(kind, item) for kind, item in lines]
        tail = b"" if ending is None else ending_bytes(ending)
        data = b"".join(encoded) + tail
        stream = io.BytesIO(data)
        kinds = [kind for kind, _ in lines] + ([ending[0]] if ending else [])
        bad = [number for number, kind in enumerate(kinds, start=1) if kind in ("foreign", "long")]
        try:
            done, keep = scan_rows(stream, Path("out.jsonl"))
        except OutputError as exc:
            assert bad, exc
            why = (
                "is longer than 1,000 bytes (no result row is)"
                if kinds[bad[0] - 1] == "long"
                else "is not a result row"
            )
            assert str(exc).startswith(f"out.jsonl: line {bad[0]} {why}, so nothing was changed"), exc
            start = sum(len(line) for line in encoded[: bad[0] - 1])
            assert stream.tell() <= start + SMALL_ROWS + 1  # never read past the bound of that line
        else:
            assert not bad
            finished = [item for kind, item in lines if kind == "row"]
            if ending is not None and ending[0] == "whole":
                finished.append(ending[1])
            assert done == {id_key(item["id"]) for item in finished}
            assert keep == len(data) - (len(tail) if ending is not None and ending[0] == "cut" else 0)


def test_the_collector_stays_paused_until_the_last_thread_leaves() -> None:
    import gc
    import threading

    from ift_engine.documents import collector_paused

    assert gc.isenabled()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with collector_paused():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with collector_paused():
        second_in.set()
        first_out.wait(5)
        assert not gc.isenabled()  # the first thread left; this one is still inside
    thread.join()
    assert gc.isenabled()
