"""Training never loses data: the output folder is refused or replaced only as promised, a run
killed with SIGKILL resumes to the same number of steps, and a resume checks it is the same run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_training import FAST, TWO_REVIEWS  # the same tiny data and fast settings

from ift_engine import IftError, train


def spec(base: Path, output: Path, epochs: float = 1) -> dict:
    return {
        "base_model": str(base),
        "output": str(output),
        "datasets": [{"records": TWO_REVIEWS * 2, "template": "sentiment-zh"}],
        "eval": {"split": 0},
        "training": {**FAST, "epochs": epochs},
    }


def ift_train(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ift_engine.cli", "train", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "IFT_ENGINE_LOAD_PLUGINS": ""},
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def test_a_folder_of_user_files_is_never_an_output(tiny_causal_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(spec(tiny_causal_dir, out)))
    for extra in ([], ["--overwrite"]):
        code, stderr = finish(ift_train(config, *extra))
        assert code == 2 and "not empty and holds no previous trained model" in stderr, stderr
        assert "Traceback" not in stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    with pytest.raises(IftError, match="would replace .*, which it reads"):
        train(spec(tiny_causal_dir, tiny_causal_dir), progress=False)


def test_a_previous_model_is_replaced_only_with_overwrite(tiny_causal_dir, tmp_path):
    out = tmp_path / "model"
    first = train(spec(tiny_causal_dir, out), progress=False)
    weights = (out / "model.safetensors").read_bytes()
    with pytest.raises(IftError, match="pass --overwrite to replace it"):
        train(spec(tiny_causal_dir, out), progress=False)
    assert (out / "model.safetensors").read_bytes() == weights
    again = train(spec(tiny_causal_dir, out, epochs=2), overwrite=True, progress=False)
    assert again.metrics["steps"] == 2 * first.metrics["steps"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging left behind


def test_overwrite_replaces_only_the_files_a_previous_run_wrote(tiny_causal_dir, tmp_path):
    out = tmp_path / "model"
    train(spec(tiny_causal_dir, out), progress=False)
    manifest = json.loads((out / "ift_model.json").read_text())
    assert "model.safetensors" in manifest["files"] and "ift_model.json" in manifest["files"]
    assert not any(name.startswith("checkpoints") for name in manifest["files"])
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    config = tmp_path / "train.yaml"
    (out / "notes.txt").write_text("mine")
    config.write_text(json.dumps(spec(tiny_causal_dir, out)))
    code, stderr = finish(ift_train(config, "--overwrite"))
    assert code == 2 and "holds files the previous trained model did not write (notes.txt)" in stderr, stderr
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()

    data = out / "data.jsonl"  # a dataset inside the output: refused before training
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in TWO_REVIEWS))
    config.write_text(
        json.dumps(
            {**spec(tiny_causal_dir, out), "datasets": [{"path": str(data), "template": "sentiment-zh"}]}
        )
    )
    code, stderr = finish(ift_train(config, "--overwrite"))
    assert code == 2 and f"would replace {data}, which it reads" in stderr, stderr
    data.unlink()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "train.yaml"]  # no lock or staging left


def test_sigkill_then_resume_finishes_the_same_run(tiny_causal_dir, tmp_path):
    out = tmp_path / "model"
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(spec(tiny_causal_dir, out, epochs=40)))  # 80 steps
    checkpoints = tmp_path / ".model.training" / "checkpoints"
    process = ift_train(config)
    deadline = time.time() + 240
    while time.time() < deadline and not list(checkpoints.glob("checkpoint-*")) and process.poll() is None:
        time.sleep(0.05)
    started = time.perf_counter()  # a second run on the same output is refused at once
    code, stderr = finish(ift_train(config, "--overwrite"))
    assert code == 2 and f"{out}: another process is writing the trained model there" in stderr, stderr
    assert time.perf_counter() - started < 60 and process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(checkpoints.glob("checkpoint-*")), "no checkpoint was written before the kill"
    assert not out.exists()  # the model folder appears only when complete

    code, stderr = finish(ift_train(config))
    assert code == 2 and "pass --resume to continue it" in stderr

    changed = tmp_path / "changed.yaml"
    changed.write_text(json.dumps(spec(tiny_causal_dir, out, epochs=41)))
    code, stderr = finish(ift_train(changed, "--resume"))
    assert code == 2 and "checkpoint was made with another training file" in stderr, stderr

    code, stderr = finish(ift_train(config, "--resume"))
    assert code == 0, stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 80 and (out / "model.safetensors").exists()
    assert not (tmp_path / ".model.training").exists()
