"""Hostile command lines, files and streams through real `ift` processes: each ends in one line
naming what is wrong and what to do, exit 2, and within a bound of time, never a hang or a
traceback (issue 19: unbounded reads, checks that came late, internal errors)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_hostile_input import assert_one_line_error  # the one definition of the promise

IFT = [sys.executable, "-m", "ift_engine.cli"]
FLOW = {
    "name": "t",
    "inputs": {"topic": "string"},
    "model": {"name": "m", "backend": "mock"},
    "nodes": [{"id": "a", "instruction": "Say {topic}", "inputs": {"topic": "$input.topic"}}],
}


def ift(*args: str, timeout: float = 120, **run: Any) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a real `ift` process."""
    run.setdefault("stdin", subprocess.DEVNULL)
    env = {**os.environ, "IFT_ENGINE_LOAD_PLUGINS": "", **run.pop("env", {})}
    done = subprocess.run([*IFT, *args], capture_output=True, timeout=timeout, env=env, **run)
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


def write_flow(folder: Path, **changes: Any) -> Path:
    path = folder / "flow.json"
    path.write_text(json.dumps({**FLOW, **changes}))
    return path


def training_file(folder: Path, **changes: Any) -> Path:
    path = folder / "train.json"
    doc = {
        "base_model": str(folder / "base"),
        "output": str(folder / "out"),
        "datasets": [{"records": [{"instruction": "a", "output": "b"}]}],
    }
    path.write_text(json.dumps({**doc, **changes}))
    return path


# -- where a file is meant: never a device, a FIFO or a pipe ------------------------------------------


def not_regular_files(folder: Path) -> dict[str, Path]:
    fifo = folder / "no-writer.fifo"
    os.mkfifo(fifo)  # nobody ever writes: opening it must not wait
    link = folder / "link-to-zero.yaml"
    link.symlink_to("/dev/zero")
    return {"device": Path("/dev/zero"), "fifo": fifo, "link to a device": link}


def test_a_device_fifo_or_link_to_one_is_refused_where_a_file_is_meant(tmp_path: Path) -> None:
    for case, path in not_regular_files(tmp_path).items():
        started = time.perf_counter()
        for command in (
            ["validate", str(path)],
            ["run", str(path), "--input", "topic=x"],
            ["train", str(path)],
        ):
            code, _, stderr = ift(*command, timeout=60)
            assert_one_line_error(code, stderr, f"{path}:", "is not a regular file", "give a file")
        assert time.perf_counter() - started < 60, case


def test_a_dataset_that_is_a_device_or_fifo_is_refused(tmp_path: Path) -> None:
    for case, path in not_regular_files(tmp_path).items():
        dataset = tmp_path / f"data-{len(case)}.jsonl"
        dataset.symlink_to(path)
        config = training_file(tmp_path, datasets=[{"path": str(dataset)}])
        code, _, stderr = ift("validate", str(config), timeout=60)
        assert_one_line_error(code, stderr, f"{dataset}: the dataset is not a regular file")


def test_a_file_past_the_size_bound_is_refused_having_read_no_more(tmp_path: Path) -> None:
    from ift_engine.documents import read_bytes
    from ift_engine.errors import WorkflowError

    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * 101)
    with pytest.raises(WorkflowError, match="big.yaml: the workflow file is larger than 100 bytes"):
        read_bytes(path, "workflow file", WorkflowError, limit=100)
    assert read_bytes(path, "workflow file", WorkflowError, limit=101) == b"#" * 101


def test_a_cache_entry_replaced_by_a_fifo_or_device_is_a_miss_without_waiting(tmp_path: Path) -> None:
    from ift_engine.workflow.cache import AnswerCache

    cache = AnswerCache(tmp_path)
    answer = {"raw": "x", "label": None, "probabilities": None}
    for replace in (lambda p: os.mkfifo(p), lambda p: p.symlink_to("/dev/zero")):
        key = AnswerCache.key(case=str(replace))
        cache.put(key, answer)
        entry = cache._path(key)
        entry.unlink()
        replace(entry)
        got: list[Any] = []
        reader = threading.Thread(target=lambda k=key, g=got: g.append(cache.get(k)), daemon=True)
        reader.start()
        reader.join(10)
        assert got == [None]


def test_inputs_without_line_breaks_stop_the_run(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    code, _, stderr = ift("run", str(write_flow(tmp_path)), "--inputs", "/dev/zero", "--output", str(output))
    assert_one_line_error(code, stderr, "an input line runs past 256 MiB without a line break")


# -- workflow size ---------------------------------------------------------------------------------


def chained_nodes(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"n{i}",
            "instruction": "Say {x}",
            "inputs": {"x": f"n{i - 1}.output" if i else "$input.topic"},
        }
        for i in range(count)
    ]


def test_a_workflow_of_more_nodes_than_the_bound_fails_fast(tmp_path: Path) -> None:
    from ift_engine.workflow.spec import MAX_NODES

    path = write_flow(tmp_path, nodes=chained_nodes(MAX_NODES + 1))
    started = time.perf_counter()
    code, _, stderr = ift("validate", str(path))
    assert_one_line_error(
        code, stderr, f"nodes: Value error, {MAX_NODES + 1:,} nodes; a workflow has at most {MAX_NODES:,}"
    )
    assert time.perf_counter() - started < 30
    code, stdout, stderr = ift("validate", str(write_flow(tmp_path, nodes=chained_nodes(MAX_NODES))))
    assert code == 0 and f"ok ({MAX_NODES} nodes" in stdout, stderr


def test_a_huge_yaml_document_fails_before_it_is_built(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    nodes = "".join(
        f"- id: n{i}\n  instruction: Say {{x}}\n  inputs: {{x: $input.topic}}\n" for i in range(300_000)
    )
    path.write_text(f"name: t\ninputs: {{topic: string}}\nmodel: {{name: m, backend: mock}}\nnodes:\n{nodes}")
    started = time.perf_counter()
    code, _, stderr = ift("validate", str(path))
    assert_one_line_error(code, stderr, "the document holds more than 1,000,000 values")
    assert time.perf_counter() - started < 30  # building it took over a minute


# -- Ray --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["--executor", "ray", "--ray-address", "127.0.0.1:1"],
            "cannot reach Ray at 127.0.0.1:1 within 10 s",
        ),
        (["--executor", "ray", "--ray-address", "nowhere"], "give HOST:PORT of the cluster's head"),
        (["--executor", "ray", "--workers", "-1"], "--workers must be at least 1, not -1"),
        (["--workers", "0"], "--workers and --ray-address belong to --executor ray"),
        (["--ray-address", "127.0.0.1:1"], "--workers and --ray-address belong to --executor ray"),
    ],
)
def test_ray_flags_are_checked_when_the_command_starts(
    tmp_path: Path, flags: list[str], expected: str
) -> None:
    pytest.importorskip("ray")
    inputs, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inputs.write_text('{"topic": "x"}\n')
    started = time.perf_counter()
    code, _, stderr = ift(
        "run", str(write_flow(tmp_path)), "--inputs", str(inputs), "--output", str(output), *flags
    )
    assert_one_line_error(code, stderr, expected)
    assert time.perf_counter() - started < 60 and not output.exists()


def test_an_address_that_does_not_answer_fails_within_the_bound() -> None:
    import socket

    from ift_engine.cluster import check_reachable
    from ift_engine.errors import IftError

    with socket.socket() as server, socket.socket() as first:
        server.bind(("127.0.0.1", 0))
        server.listen(0)  # one connection waits in the queue; later ones get no answer
        address = f"127.0.0.1:{server.getsockname()[1]}"
        first.connect(server.getsockname())
        started = time.perf_counter()
        with pytest.raises(IftError, match=f"cannot reach Ray at {address} within 0.5 s \\(no answer\\)"):
            check_reachable(address, timeout=0.5)
        assert time.perf_counter() - started < 5


# -- numbers, names and text (issue 19, section 3) -------------------------------------------------


def long_number() -> str:
    return "9" * 5000  # past Python's 4,300-digit conversion limit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"name: t\nseed: {long_number()}\n", "a number has more than 4,300 digits"),
        (f'{{"name": "t", "seed": {long_number()}}}', "a number has more than 4,300 digits"),
        ("name: t\nday: 2001-02-30\n", "a value cannot be read: day is out of range for month"),
        ("name: t\nnodes: []\nname: u\n", "invalid YAML at line 3: the key 'name' is written twice"),
        ('{"name": "t", "name": "u"}', "the key 'name' is written twice"),
    ],
)
def test_numbers_dates_and_repeated_keys_in_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(text)
    code, _, stderr = ift("validate", str(path))
    assert_one_line_error(code, stderr, str(path), expected)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(
        "base: &base {name: m, backend: mock}\nname: t\ninputs: {topic: string}\n"
        "models: {w: {<<: *base, name: other}}\nmodel: w\n"
        "nodes: [{id: a, instruction: 'Say {topic}', inputs: {topic: $input.topic}}]\n"
    )
    code, _, stderr = ift("validate", str(path))
    assert code == 2 and "base: unknown field" in stderr  # the merge itself is accepted


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"seed": 2**70}, "seed: Input should be less than or equal to 4294967295"),
        ({"seed": True}, "seed: Input should be a valid integer"),
        ({"training": {"batch_size": True}}, "training.batch_size: Input should be a valid integer"),
        ({"augment": {"copies": 10**6}}, "augment.copies: Input should be less than or equal to 100"),
        ({"eval": {"split": 5}}, "eval.split: 5 records held out, but the data has 1"),
        (
            {
                "datasets": [
                    {
                        "records": [
                            {
                                "messages": [
                                    {"role": "wizard", "content": "a"},
                                    {"role": "assistant", "content": "b"},
                                ]
                            }
                        ]
                    }
                ]
            },
            "unknown role 'wizard'",
        ),
        (
            {
                "datasets": [
                    {
                        "records": [{"text": "a", "output": "正面"}],
                        "template": "sentiment-zh",
                        "paraphrases": [99],
                    }
                ]
            },
            "datasets[0].paraphrases: template 'sentiment-zh' has paraphrases 0..5, not 99",
        ),
    ],
)
def test_bad_training_values_fail_when_the_file_is_checked(
    tmp_path: Path, changes: dict[str, Any], expected: str
) -> None:
    code, _, stderr = ift("validate", str(training_file(tmp_path, **changes)))
    assert_one_line_error(code, stderr, expected)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            {"max_steps": "ten"},
            "'max_steps': Input should be a valid integer, not 'ten' (TrainingArguments.max_steps takes int)",
        ),
        ({"max_steps": True}, "'max_steps': Input should be a valid integer, not True"),
        (
            {"bf16": "yes"},
            "'bf16': Input should be a valid boolean, not 'yes' (TrainingArguments.bf16 takes bool)",
        ),
        ({"lr_scheduler_type": "bogus"}, "'lr_scheduler_type': Input should be 'linear', 'cosine'"),
        ({"report_to": 5}, "'report_to': Input should be a valid string, not 5"),
    ],
)
def test_training_args_are_checked_when_the_file_loads(
    tmp_path: Path, args: dict[str, Any], expected: str
) -> None:
    code, _, stderr = ift("validate", str(training_file(tmp_path, training={"args": args})))
    assert_one_line_error(
        code, stderr, "train.json: training.args: ", expected, "fix the value or remove the key"
    )


def test_training_args_are_checked_before_the_model_loads(tmp_path: Path) -> None:
    # The base model does not exist: an error about it would mean the args were checked too late.
    config = training_file(tmp_path, training={"args": {"max_steps": "ten"}})
    for command in (["train", "--dry-run"], ["train"]):
        code, _, stderr = ift(*command, str(config))
        assert_one_line_error(
            code,
            stderr,
            f"{config}: training.args: Value error, 'max_steps': Input should be a valid integer",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.json"]


def test_well_typed_training_args_pass(tmp_path: Path) -> None:
    args = {
        "max_steps": 3,
        "learning_rate": 1,
        "lr_scheduler_type": "cosine",
        "report_to": ["none"],
        "eval_steps": None,
        "debug": ["underflow_overflow"],
    }
    code, stdout, stderr = ift("validate", str(training_file(tmp_path, training={"args": args})))
    assert code == 0 and "ok (training file" in stdout, stderr


def test_a_training_file_without_base_model_is_named_as_one(tmp_path: Path) -> None:
    config = training_file(tmp_path)
    doc = json.loads(config.read_text())
    del doc["base_model"]
    config.write_text(json.dumps(doc))
    code, _, stderr = ift("validate", str(config))
    assert_one_line_error(code, stderr, "base_model: Field required")


def test_jsonl_datasets_split_lines_on_newlines_only_and_drop_a_bom(tmp_path: Path) -> None:
    from ift_engine.records import read_records

    path = tmp_path / "data.jsonl"
    records = [{"instruction": "a\u2028b\u0085c", "output": "d"}, {"instruction": "e", "output": "f"}]
    path.write_bytes(
        b"\xef\xbb\xbf" + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    )
    assert [record for _, record in read_records(path)] == records
    csv_path = tmp_path / "data.csv"
    csv_path.write_text('instruction,output\n"a\u2028b",c\n')
    assert [record for _, record in read_records(csv_path)] == [{"instruction": "a\u2028b", "output": "c"}]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"nodes": [{**FLOW["nodes"][0], "paraphrase": 3}]},
            "node 'a', field 'paraphrase': template 'a' has paraphrases 0..0, not 3",
        ),
        (
            {"nodes": [{**FLOW["nodes"][0], "paraphrase_seed": 2**70}]},
            "paraphrase_seed: Input should be less than or equal to 4294967295",
        ),
        (
            {"nodes": [{**FLOW["nodes"][0], "paraphrase": True}]},
            "paraphrase: Input should be a valid integer",
        ),
        (
            {"inputs": {"n": {"type": "integer", "default": "three"}}},
            "inputs.n: Value error, default 'three' is not of type integer",
        ),
        (
            {
                "nodes": [
                    {
                        "id": "a",
                        "instruction": "Is {topic} good?",
                        "inputs": {"topic": "$input.topic"},
                        "answer": "label",
                        "labels": ["yes", "yes"],
                    }
                ]
            },
            "the label 'yes' is given twice",
        ),
        ({"name": "../x"}, "name: Value error, '../x': a name has no / or"),
        ({"name": ".."}, "a name has no / or"),
        (
            {
                "ensembles": {
                    "e1": {"ensemble": "hard_vote", "members": ["m", "e2"]},
                    "e2": {"ensemble": "hard_vote", "members": ["m", "e1"]},
                },
                "nodes": [{**FLOW["nodes"][0], "model": "e1"}],
            },
            "ensemble 'e1' lists the ensemble 'e2' as a member; members are models",
        ),
    ],
)
def test_bad_workflow_values_fail_at_validate(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    code, _, stderr = ift("validate", str(write_flow(tmp_path, **changes)))
    assert_one_line_error(code, stderr, expected)


def test_a_literal_that_looks_like_a_reference_before_a_newline_stays_literal(tmp_path: Path) -> None:
    node = {
        "id": "a",
        "instruction": "Say {topic} {extra}",
        "inputs": {"topic": "$input.topic", "extra": "$input.nothing\n"},
    }
    code, stdout, stderr = ift("run", str(write_flow(tmp_path, nodes=[node])), "--input", "topic=x", "--json")
    assert code == 0, stderr  # before: a reference to an undeclared input, refused
    assert json.loads(stdout)["a"].startswith("Say x $input.nothing")


def test_names_with_mathtext_are_drawn_as_written(tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path,
        name="$x^{a$",
        models={"$m^$": {"name": "$n_{", "backend": "mock"}},
        model="$m^$",
        outputs={"$$o$": "a.output"},
    )
    code, _, stderr = ift("graph", str(flow), "--png", str(tmp_path / "dag.png"))
    assert code == 0, stderr
    assert (tmp_path / "dag.png").read_bytes().startswith(b"\x89PNG")


# -- paths and standard streams --------------------------------------------------------------------


@pytest.mark.parametrize("under", ["afile/sub", "afile/sub/deeper"])
def test_every_output_under_a_file_is_refused_before_any_work(tmp_path: Path, under: str) -> None:
    flow, inputs = write_flow(tmp_path), tmp_path / "in.jsonl"
    inputs.write_text('{"topic": "x"}\n')
    (tmp_path / "afile").write_text("mine")
    config = training_file(tmp_path, output=under)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({**json.loads(config.read_text()), "output": "out"}))
    commands = {
        "ONNX export": ["export", "m", "--out", under],
        "trained model": ["train", str(config)],
        "trained model ": ["train", "--dry-run", str(config)],
        "trained model  ": ["train", str(elsewhere), "--output", under],
        "output": ["run", str(flow), "--inputs", str(inputs), "--output", f"{under}/out.jsonl"],
        "trace": ["run", str(flow), "--input", "topic=x", "--trace", f"{under}/t.json"],
        "picture": ["graph", str(flow), "--png", f"{under}/dag.png"],
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    for what, command in commands.items():
        code, stdout, stderr = ift(*command, cwd=tmp_path)
        assert_one_line_error(
            code, stderr, "afile is a file, not a folder; choose another path for the", f"the {what.strip()}"
        )
        assert stdout == "", what  # before any work: no node ran, no graph printed
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "afile").read_text() == "mine"


def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path: Path) -> None:
    flow, long_name = write_flow(tmp_path), str(tmp_path / ("x" * 300))
    for command in (["validate", long_name], ["run", str(flow), "--input", "topic=x", "--trace", long_name]):
        code, _, stderr = ift(*command)
        assert_one_line_error(code, stderr, "File name too long")


def test_a_deleted_working_folder_is_one_line(tmp_path: Path) -> None:
    flow, gone = write_flow(tmp_path), tmp_path / "gone"
    gone.mkdir()
    command = f"cd {gone} && rmdir {gone} && exec {' '.join(IFT)} run {flow} --input topic=x --trace t.json"
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)
    assert_one_line_error(done.returncode, done.stderr, "the current folder no longer exists")


def test_closed_and_full_standard_streams(tmp_path: Path) -> None:
    flow, output = write_flow(tmp_path), tmp_path / "out.jsonl"
    done = subprocess.run(
        ["sh", "-c", f"exec {' '.join(IFT)} run {flow} --inputs - --output {output} <&-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(done.returncode, done.stderr, "standard input is closed")
    assert not output.exists()
    done = subprocess.run(
        ["sh", "-c", f"exec {' '.join(IFT)} validate {flow} >&-"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stderr == ""  # nothing to write to: quiet
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*IFT, "graph", str(flow)], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120
        )
    assert_one_line_error(done.returncode, done.stderr, "No space left on device")
    many = write_flow(tmp_path, nodes=chained_nodes(3000))
    done = subprocess.run(
        ["sh", "-c", f"{' '.join(IFT)} graph {many} | head -1; exit ${{PIPESTATUS:-0}}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout == "flowchart TD\n" and "Traceback" not in done.stderr and "error" not in done.stderr


def test_a_terminal_that_cannot_encode_the_headers(tmp_path: Path) -> None:
    code, stdout, stderr = ift(
        "run",
        str(write_flow(tmp_path)),
        "--input",
        "topic=x",
        env={"LC_ALL": "C", "PYTHONIOENCODING": "ascii"},
    )
    assert code == 0 and "Say x" in stdout and "Traceback" not in stderr, stderr


# -- flags checked when the command starts (section 4) -----------------------------------------------


@pytest.mark.parametrize(
    "flag", [["--trace", "t.json"], ["--input", "topic=x"], ["--json"], ["--input-json", "{}"]]
)
def test_single_run_flags_are_refused_in_a_batch_run(tmp_path: Path, flag: list[str]) -> None:
    inputs, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inputs.write_text('{"topic": "x"}\n')
    code, _, stderr = ift(
        "run", str(write_flow(tmp_path)), "--inputs", str(inputs), "--output", str(output), *flag
    )
    assert_one_line_error(code, stderr, f"{flag[0]} belong to a run on one input")
    assert not output.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["", "--out", "x"], "the model to export is empty"),
        (["m", "--out", "x", "--atol", "nan"], "--atol nan: give a finite tolerance of 0 or more"),
        (["m", "--out", "x", "--atol", "-1"], "--atol -1.0: give a finite tolerance"),
    ],
)
def test_export_arguments_are_checked_when_the_command_starts(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    code, _, stderr = ift("export", *args, cwd=tmp_path)
    assert_one_line_error(code, stderr, expected)
    assert list(tmp_path.iterdir()) == []


def test_export_for_cuda_without_a_gpu_fails_at_once(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, stderr = ift("export", "m", "--out", "x", "--device", "cuda", cwd=tmp_path)
    assert_one_line_error(code, stderr, "--device cuda: no CUDA GPU is available here")


def test_a_port_out_of_range_is_refused() -> None:
    code, _, stderr = ift("serve", "--port", "70000")
    assert code == 2 and "'70000' is not a port: give a number from 1 to 65535" in stderr


def test_export_builder_dies_with_the_engine() -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; from ift_engine.onnx.export import die_with_parent; "
            "c = subprocess.Popen(['sleep', '300'], preexec_fn=die_with_parent); print(c.pid, flush=True); time.sleep(300)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and is_alive(child):
        time.sleep(0.05)
    assert not is_alive(child)


def is_alive(pid: int) -> bool:
    """Running, not gone and not a zombie (killed, waiting for its reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- Ctrl-C ------------------------------------------------------------------------------------------


def test_the_command_module_loads_no_heavy_library() -> None:
    """What loads before ``main`` runs cannot be interrupted quietly: it stays small."""
    code = "import sys, ift_engine, ift_engine.cli; print(sorted({'pydantic', 'torch', 'transformers', 'networkx'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def wait_for_library(pid: int, name: str, timeout: float = 60) -> None:
    """Until the process has mapped a shared library whose path holds ``name`` (it is importing it)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if name in Path(f"/proc/{pid}/maps").read_text():
            return
        time.sleep(0.01)
    raise AssertionError(f"{name} was never loaded")


@pytest.mark.parametrize(
    ("library", "after"), [("_pydantic_core", 0.0), ("libtorch", 0.0), ("libtorch", 0.5)]
)
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path: Path, library: str, after: float) -> None:
    # Checking training.args imports pydantic, then transformers and torch: the signal lands
    # while one of them loads.
    config = training_file(tmp_path, training={"args": {"max_steps": 1}})
    env = {**os.environ, "IFT_ENGINE_LOAD_PLUGINS": ""}
    process = subprocess.Popen(
        [*IFT, "validate", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    wait_for_library(process.pid, library)
    time.sleep(after)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    text = stderr.decode(errors="replace")
    assert process.returncode == 130, text
    assert [line for line in text.splitlines() if line.strip()] == ["interrupted"], text
