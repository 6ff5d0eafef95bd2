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


def test_sigkill_then_resume_finishes_the_same_run(tiny_causal_dir, tmp_path):
    out = tmp_path / "model"
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(spec(tiny_causal_dir, out, epochs=40)))  # 80 steps
    checkpoints = tmp_path / ".model.training" / "checkpoints"
    process = ift_train(config)
    deadline = time.time() + 240
    while time.time() < deadline and not list(checkpoints.glob("checkpoint-*")) and process.poll() is None:
        time.sleep(0.05)
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
