"""Never lose a user's data: batch outputs (resume, locking, pipes, unwritable targets, write
failures), trace and picture files, and the answer cache. Real subprocesses throughout."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ift_engine import Engine
from ift_engine.workflow import Workflow
from ift_engine.workflow.cache import STAGING_GRACE_SECONDS, AnswerCache

FLOW = {
    "name": "two-step",
    "inputs": {"topic": "string"},
    "model": {"name": "writer", "backend": "mock", "options": {"default": "- a"}},
    "nodes": [
        {"id": "outline", "instruction": "Outline {topic}", "inputs": {"topic": "$input.topic"}},
        {
            "id": "content",
            "instruction": "Write {topic} from:\n{outline}",
            "inputs": {"topic": "$input.topic", "outline": "outline.output"},
        },
    ],
}


def workflow(folder: Path, delay: float = 0.0, **extra: Any) -> Path:
    doc = json.loads(json.dumps(FLOW))
    doc["model"]["options"]["delay"] = delay
    doc.update(extra)
    path = folder / "wf.yaml"
    path.write_text(json.dumps(doc))
    return path


def ift(*args: str, stdin: Any = None, **popen: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ift_engine.cli", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "IFT_ENGINE_LOAD_PLUGINS": ""},
        **popen,
    )


def finish(process: subprocess.Popen[bytes], data: bytes | None = None) -> tuple[int, str]:
    _, stderr = process.communicate(data, timeout=120)
    return process.returncode, stderr.decode()


def batch_run(flow: Path, inputs: Path, output: Path, *extra: str) -> list[str]:
    """``ift run`` arguments of a batch run from ``inputs`` to ``output``."""
    return ["run", str(flow), "--inputs", str(inputs), "--output", str(output), *extra]


def run(*args: str) -> tuple[int, str]:
    return finish(ift(*args))


def inputs_file(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "topic": f"t{i}"}) + "\n" for i in range(count)))
    return path


def ids(path: Path) -> list[Any]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def one_line_error(stderr: str) -> bool:
    """No traceback, and one error line, last (a progress bar may be drawn before it)."""
    lines = [line.split("\r")[-1] for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return "Traceback" not in stderr and len(errors) == 1 and lines[-1] == errors[0]


# -- resume ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "foreign",
    [
        "[1, 2]",
        '{"note": "checked by hand"}',
        "not json",
        '{"id": 1',
        '{"id": "r3", "note": "x"}',
        '{"id": "r3", "topic": "t3"}',
    ],
)
def test_resume_never_deletes_rows_after_a_line_that_is_not_a_row(tmp_path: Path, foreign: str) -> None:
    flow, inputs, output = workflow(tmp_path), inputs_file(tmp_path / "in.jsonl", 4), tmp_path / "out.jsonl"
    before = f'{{"id": "r0", "outputs": {{}}, "error": null}}\n{foreign}\n{{"id": "r1", "outputs": {{}}, "error": null}}\n'
    output.write_text(before)
    code, stderr = run(*batch_run(flow, inputs, output, "--resume"))
    assert code == 2 and f"{output}: line 2 is not a result row, so nothing was changed" in stderr
    assert one_line_error(stderr) and output.read_text() == before


def test_resume_drops_only_a_last_row_cut_short(tmp_path: Path) -> None:
    flow, inputs, output = workflow(tmp_path), inputs_file(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    output.write_text(
        '{"id": "r0", "outputs": {}, "error": null}\n\n{"id": "r1", "outputs": {}, "error": null}\n{"id": "r2", "outp'
    )
    code, stderr = run(*batch_run(flow, inputs, output, "--resume"))
    assert code == 0, stderr
    rows = [json.loads(line) for line in output.read_text().splitlines() if line.strip()]
    assert [r["id"] for r in rows] == ["r0", "r1", "r2"] and rows[2]["error"] is None


def test_a_whole_last_row_without_its_newline_is_kept(tmp_path: Path) -> None:
    flow, inputs, output = workflow(tmp_path), inputs_file(tmp_path / "in.jsonl", 2), tmp_path / "out.jsonl"
    output.write_text('{"id": "r0", "outputs": {"kept": true}, "error": null}')
    code, stderr = run(*batch_run(flow, inputs, output, "--resume"))
    assert code == 0, stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert rows[0] == {"id": "r0", "outputs": {"kept": True}, "error": None} and [r["id"] for r in rows] == [
        "r0",
        "r1",
    ]


def limit_memory(size: int) -> Any:
    """A ``preexec_fn``: the child may map at most ``size`` bytes (an unbounded read fails)."""
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (size, size))


def test_resume_reads_the_previous_output_a_line_at_a_time(tmp_path: Path) -> None:
    flow, inputs, output = workflow(tmp_path), inputs_file(tmp_path / "in.jsonl", 2), tmp_path / "out.jsonl"
    first = b'{"id": "r0", "outputs": {}, "error": null}\n'
    output.write_bytes(first)
    with output.open("r+b") as file:
        file.truncate(8 * 2**30)  # 8 GiB of zero bytes after the row, sparse: no disk used
    process = ift(*batch_run(flow, inputs, output, "--resume"), preexec_fn=limit_memory(2**30))
    code, stderr = finish(process)
    assert code == 2 and one_line_error(stderr), stderr
    assert f"{output}: line 2 is longer than 32 MiB (no result row is), so nothing was changed" in stderr
    assert output.stat().st_size == 8 * 2**30
    with output.open("rb") as file:
        assert file.read(len(first) + 1) == first + b"\0"


def test_a_resume_over_many_rows_keeps_every_one_and_runs_only_the_rest(tmp_path: Path) -> None:
    count = 30_000
    flow, inputs, output = (
        workflow(tmp_path),
        inputs_file(tmp_path / "in.jsonl", count + 3),
        tmp_path / "out.jsonl",
    )
    error = {"node": "content", "message": "failed before"}
    rows = [
        {"id": f"r{i}", "outputs": {"content": "x" * (i % 50)}, "error": error if i % 7 == 0 else None}
        for i in range(count)
    ]
    before = "".join(json.dumps(row) + "\n" for row in rows) + '{"id": "r30000", "outp'
    output.write_text(before)
    code, stderr = run(*batch_run(flow, inputs, output, "--resume"))
    assert code == 0 and f"3 succeeded, 0 failed, {count} skipped" in stderr, stderr
    text = output.read_text()
    assert text.startswith(before.rpartition("\n")[0] + "\n")  # every finished row kept, as it was
    assert sorted(ids(output)) == sorted(f"r{i}" for i in range(count + 3))


def test_a_result_too_long_for_a_row_is_written_as_a_failed_row(tmp_path: Path) -> None:
    from ift_engine.workflow.rows import MAX_ROW_BYTES, row_line

    line = row_line(
        {"id": 7, "outputs": {"a": "x" * (MAX_ROW_BYTES + 1)}, "error": None, "cached": [], "seconds": 0}
    )
    row = json.loads(line)
    assert len(line) < 1000 and row["id"] == 7 and row["outputs"] == {}
    assert "over the 32 MiB a row may hold" in row["error"]["message"]
    fits = {"id": 8, "outputs": {"a": "x" * (MAX_ROW_BYTES - 100)}, "error": None, "cached": [], "seconds": 0}
    assert json.loads(row_line(fits)) == fits


# -- inputs from pipes -----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["-", "/dev/stdin"])
def test_inputs_from_a_pipe(tmp_path: Path, source: str) -> None:
    flow, output = workflow(tmp_path), tmp_path / "out.jsonl"
    data = inputs_file(tmp_path / "in.jsonl", 5).read_bytes()
    code, stderr = finish(
        ift("run", str(flow), "--inputs", source, "--output", str(output), stdin=subprocess.PIPE), data
    )
    assert code == 0, stderr
    assert ids(output) == [f"r{i}" for i in range(5)] and "5 succeeded, 0 failed" in stderr


def test_inputs_from_a_fifo(tmp_path: Path) -> None:
    flow, output, fifo = workflow(tmp_path), tmp_path / "out.jsonl", tmp_path / "inputs.fifo"
    os.mkfifo(fifo)
    data = inputs_file(tmp_path / "in.jsonl", 3).read_bytes()
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    code, stderr = run(*batch_run(flow, fifo, output))
    writer.join(10)
    assert code == 0, stderr
    assert ids(output) == ["r0", "r1", "r2"]


# -- two writers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("resume", [True, False])
def test_a_second_process_on_the_same_output_fails_at_once(tmp_path: Path, resume: bool) -> None:
    flow, inputs, output = (
        workflow(tmp_path, delay=0.5),
        inputs_file(tmp_path / "in.jsonl", 12),
        tmp_path / "out.jsonl",
    )
    # The first run must outlast the second one's start-up, even on a loaded machine.
    args = batch_run(flow, inputs, output, "--batch-size", "2", "--no-cache")
    first = ift(*args, "--resume")
    deadline = time.time() + 60
    while time.time() < deadline and not (output.exists() and output.stat().st_size):
        time.sleep(0.02)
    started = time.perf_counter()
    code, stderr = run(*args, *(["--resume"] if resume else []))
    assert code == 2 and "another process is writing to this output" in stderr and one_line_error(stderr)
    assert time.perf_counter() - started < 30
    assert finish(first)[0] == 0
    assert sorted(ids(output)) == sorted(f"r{i}" for i in range(12))  # each id once, no torn line


# -- hostile input lines -------------------------------------------------------------------------------


def test_undecodable_surrogate_and_deep_lines_are_bad_lines_the_rest_run(tmp_path: Path) -> None:
    flow, inputs, output = workflow(tmp_path), tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    deep = b"[" * 100_000 + b"]" * 100_000
    lines = [
        b'{"id": "ok1", "topic": "bees"}',
        b'{"id": "latin1", "topic": "caf\xe9"}',
        b'{"id": "lone", "topic": "\\ud800 half a pair"}',
        b'{"id": "deep", "topic": ' + deep + b"}",
        b'{"id": NaN, "topic": "x"}',
        b'{"id": "ok2", "topic": "ants"}',
    ]
    inputs.write_bytes(b"\n".join(lines) + b"\n")
    for attempt in ("first", "resume"):
        args = batch_run(flow, inputs, output)
        code, stderr = run(*args, *(["--resume"] if attempt == "resume" else []))
        assert code == 1 and "Traceback" not in stderr, stderr
        assert "line 2: not UTF-8 (at byte offset 61)" in stderr
        assert "line 4: nested too deeply to read" in stderr
        assert "line 5: the id cannot be written as JSON" in stderr
    rows = {row["id"]: row for row in map(json.loads, output.read_bytes().decode("utf-8").splitlines())}
    assert set(rows) == {"ok1", "lone", "ok2"} and rows["ok1"]["error"] is None
    assert rows["lone"]["outputs"]["content"] == "- a"  # the lone surrogate ran; the row is valid UTF-8


# -- outputs that cannot be written --------------------------------------------------------------------


def test_unwritable_outputs_are_one_line_errors_that_leave_nothing(tmp_path: Path) -> None:
    flow, inputs = workflow(tmp_path), inputs_file(tmp_path / "in.jsonl", 2)
    (tmp_path / "afile").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = {
        "a folder": batch_run(flow, inputs, tmp_path),
        "a device": batch_run(flow, inputs, Path("/dev/full")),
        "under a file": batch_run(flow, inputs, tmp_path / "afile" / "o.jsonl"),
        "missing inputs": batch_run(flow, tmp_path / "nope.jsonl", tmp_path / "o.jsonl"),
        "inputs a folder": batch_run(flow, tmp_path, tmp_path / "o.jsonl"),
        "trace a folder": ["run", str(flow), "--input", "topic=x", "--trace", str(tmp_path)],
        "trace a device": ["run", str(flow), "--input", "topic=x", "--trace", "/dev/full"],
        "trace under a file": [
            "run",
            str(flow),
            "--input",
            "topic=x",
            "--trace",
            str(tmp_path / "afile" / "t.json"),
        ],
        "png suffix": ["graph", str(flow), "--png", str(tmp_path / "graph.bmpx")],
        "png a folder": ["graph", str(flow), "--png", str(tmp_path)],
    }
    for case, args in cases.items():
        code, stderr = run(*args)
        assert code == 2 and one_line_error(stderr), f"{case}: {stderr}"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no empty or staging file left


def test_trace_and_picture_are_written_whole(tmp_path: Path) -> None:
    flow = workflow(tmp_path)
    code, stderr = run(
        "run", str(flow), "--input", "topic=x", "--trace", str(tmp_path / "new" / "trace.json")
    )
    assert code == 0, stderr
    assert json.loads((tmp_path / "new" / "trace.json").read_text())["outputs"]
    code, stderr = run("graph", str(flow), "--png", str(tmp_path / "graph.svg"))
    assert code == 0, stderr
    assert (tmp_path / "graph.svg").read_text().lstrip().startswith("<?xml")
    assert not [p for p in tmp_path.rglob(".*")]


def _small_file_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))


def test_a_failed_write_keeps_the_rows_written_and_resume_finishes(tmp_path: Path) -> None:
    flow, inputs, output = workflow(tmp_path), inputs_file(tmp_path / "in.jsonl", 12), tmp_path / "out.jsonl"
    args = batch_run(flow, inputs, output, "--batch-size", "2")
    code, stderr = finish(ift(*args, preexec_fn=_small_file_limit))
    assert (
        code == 2 and "cannot write the output" in stderr and "--resume" in stderr and one_line_error(stderr)
    )
    kept = ids(output)
    assert 0 < len(kept) < 12
    code, stderr = run(*args, "--resume")
    assert code == 0, stderr
    assert ids(output)[: len(kept)] == kept
    assert sorted(ids(output)) == sorted(f"r{i}" for i in range(12))


# -- the answer cache ------------------------------------------------------------------------------------


def test_cache_key_holds_the_plugin_settings() -> None:
    pytest.importorskip("ift_engine_myplugin")
    doc = {
        **FLOW,
        "nodes": [
            {"id": "q", "template": "yes-no-en", "inputs": {"question": "$input.topic"}, "parser": "yes_no"}
        ],
        "model": {"name": "m", "backend": "mock", "options": {"default": "maybe"}},
    }

    calls: list[int] = []
    engine = Engine()  # its workflows share one pool: one mock answers them all

    def cached(strict: bool) -> bool:
        wf = engine.workflow({**doc, "plugins": {"myplugin": {"strict": strict}}})
        result = wf.runner().run_batch([(1, {"topic": "Is it?"})])[0]
        calls.append(len(wf.pool.get(wf.graph.node("q").model).calls))  # the shared mock's calls so far
        return result.nodes["q"].cached if result.ok else False

    assert cached(False) is False and cached(False) is True
    assert cached(True) is False  # other settings: another key (and a strict parse error here)
    assert calls == [1, 1, 2]  # the strict run asked the model again: its settings are in the key


def test_a_same_size_replacement_with_the_old_mtime_is_a_new_model(
    tiny_causal_dir: Path, tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_causal_dir, folder)
    doc = {**FLOW, "model": str(folder), "generation": {"max_new_tokens": 3}}
    assert not Workflow.from_dict(doc).run(topic="bees").nodes["outline"].cached
    assert Workflow.from_dict(doc).run(topic="bees").nodes["outline"].cached
    weights = folder / "model.safetensors"
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    replacement = tmp_path / "replacement"
    replacement.write_bytes(bytes(data))
    os.replace(replacement, weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    assert not Workflow.from_dict(doc).run(topic="bees").nodes["outline"].cached


@pytest.mark.parametrize(
    "entry", ["[1, 2]", '{"note": 1}', '{"raw": 3}', '{"raw": null, "label": null}', "{", '"x"']
)
def test_a_cache_entry_of_the_wrong_shape_is_a_miss(tmp_path: Path, entry: str) -> None:
    wf = Workflow.from_dict(FLOW)
    cache = AnswerCache(tmp_path / "cache")
    assert wf.run(topic="bees", cache=cache)["content"] == "- a"
    for path in (tmp_path / "cache").rglob("*.json"):
        path.write_text(entry)
    again = wf.run(topic="bees", cache=cache)
    assert again["content"] == "- a" and not any(n.cached for n in again.nodes.values())


def test_a_killed_cache_write_leaves_no_staging_file(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path)
    key = AnswerCache.key(prompt="x")
    orphan = tmp_path / key[:2] / f".{key}.abc123"
    orphan.parent.mkdir(parents=True)
    orphan.write_text('{"raw": "half')
    old = time.time() - STAGING_GRACE_SECONDS - 5
    os.utime(orphan, (old, old))
    cache.put(key, {"raw": "answer", "label": None, "probabilities": None})
    assert cache.get(key) == {"raw": "answer", "label": None, "probabilities": None}
    assert [p.name for p in orphan.parent.iterdir()] == [f"{key}.json"]


def test_an_existing_trace_or_picture_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    flow = workflow(tmp_path)
    for path, args in (
        (tmp_path / "mine.json", ["run", str(flow), "--input", "topic=x", "--trace"]),
        (tmp_path / "mine.png", ["graph", str(flow), "--png"]),
    ):
        path.write_text("my own notes")
        code, stderr = run(*args, str(path))
        assert code == 2 and "pass --overwrite to replace it" in stderr and one_line_error(stderr)
        assert path.read_text() == "my own notes"
        code, stderr = run(*args, str(path), "--overwrite")
        assert code == 0, stderr
        assert path.read_bytes() != b"my own notes"


# -- output folders: file lists, locks, staging markers -------------------------------------------


def test_a_previous_output_is_replaced_only_when_it_holds_what_its_manifest_lists(tmp_path: Path) -> None:
    from ift_engine.files import OutputError, check_output_folder, read_json_mapping, write_manifest

    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "model.bin").write_bytes(b"w")
    (out / "sub" / "tokenizer.json").write_text("{}")
    write_manifest(out, "ift_model.json", {"kind": "test"})

    def check() -> None:
        check_output_folder(
            out, "test output", previous=lambda f: read_json_mapping(f / "ift_model.json"), overwrite=True
        )

    check()  # only the listed files: may be replaced
    for foreign in (out / "notes.txt", out / "sub" / "mine.txt", out / "empty-folder"):
        foreign.mkdir() if foreign.name == "empty-folder" else foreign.write_text("x")
        with pytest.raises(OutputError, match=f"did not write \\({foreign.relative_to(out).as_posix()}\\)"):
            check()
        foreign.rmdir() if foreign.is_dir() else foreign.unlink()
    manifest = json.loads((out / "ift_model.json").read_text())
    del manifest["files"]
    (out / "ift_model.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputError, match="no list of the files it wrote"):
        check()


def test_an_output_folder_lock_is_exclusive_and_leaves_no_file(tmp_path: Path) -> None:
    from ift_engine.files import OutputError, OutputLock

    out = tmp_path / "model"
    with OutputLock(out, "trained model"):
        started = time.perf_counter()
        with pytest.raises(OutputError, match=f"{out}: another process is writing the trained model there"):
            with OutputLock(out, "trained model"):
                pass
        assert time.perf_counter() - started < 1
        # another process is refused as well (flock, as batch outputs)
        code = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from pathlib import Path; from ift_engine.files import OutputLock; OutputLock(Path({str(out)!r}), 'x').__enter__()",
            ],
            capture_output=True,
            timeout=60,
        )
        assert code.returncode != 0 and b"another process is writing" in code.stderr
    assert list(tmp_path.iterdir()) == []
    with OutputLock(out, "trained model"):  # free again
        pass


def test_staging_folders_are_known_by_their_marker_not_their_name(tmp_path: Path) -> None:
    from ift_engine.files import OutputLock, move_into_place, staging_folder

    out = tmp_path / "export"
    lookalike = tmp_path / ".export.exporting-999999-abc"  # a user's folder with a staging-like name
    lookalike.mkdir()
    (lookalike / "mine.txt").write_text("keep")
    with OutputLock(out, "export"):
        dead = staging_folder(out, "exporting")  # as a run killed now would leave it
        (dead / "half.onnx").write_bytes(b"x")
        other = staging_folder(tmp_path / "other", "exporting")  # another output's staging
    with OutputLock(out, "export"):  # the next run takes the lock and cleans up
        pass
    assert not dead.exists() and other.exists()
    assert (lookalike / "mine.txt").read_text() == "keep"

    out.mkdir()
    (out / "old.bin").write_text("previous output")
    with OutputLock(out, "export"):
        aside = staging_folder(out, "replaced")  # killed between moving the old output aside ...
        os.rename(out, aside / out.name)  # ... and renaming the new one into place
    with OutputLock(out, "export"):
        pass
    assert (out / "old.bin").read_text() == "previous output" and not aside.exists()
    with OutputLock(out, "export"):
        new = staging_folder(out, "exporting") / "fp32"
        new.mkdir()
        (new / "new.bin").write_text("new")
        move_into_place(new, out)
    assert sorted(p.name for p in out.iterdir()) == ["new.bin"]


@pytest.mark.parametrize("how", ["same path", "a link", "stdin"])
def test_an_output_that_is_the_inputs_file_is_refused(tmp_path: Path, how: str) -> None:
    flow, inputs = workflow(tmp_path), inputs_file(tmp_path / "in.jsonl", 3)
    before = inputs.read_bytes()
    output = inputs
    if how == "a link":
        output = tmp_path / "link.jsonl"
        output.symlink_to(inputs)
    source = "-" if how == "stdin" else str(inputs)
    with inputs.open("rb") as stdin:
        code, stderr = finish(
            ift("run", str(flow), "--inputs", source, "--output", str(output), "--resume", stdin=stdin)
        )
    assert code == 2 and "the output is the inputs file" in stderr and one_line_error(stderr), stderr
    assert inputs.read_bytes() == before
