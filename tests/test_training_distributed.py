"""Training under torchrun, unchanged: two CPU ranks (gloo) share the data, only rank 0 writes the
model, and the result loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_training import FAST

RECORDS = [{"instruction": f"Repeat {i}", "output": str(i)} for i in range(8)]


def spec(base: Path, output: Path) -> dict:
    return {
        "base_model": str(base),
        "output": str(output),
        "datasets": [{"records": RECORDS}],
        "eval": {"split": 0},
        "training": {**FAST, "epochs": 1, "batch_size": 2},
    }


@pytest.mark.skipif(
    shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="needs torchrun"
)
def test_torchrun_two_ranks_train_and_rank_zero_writes(tiny_causal_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(spec(tiny_causal_dir, tmp_path / "model")))
    torchrun = str(Path(sys.executable).parent / "torchrun")
    done = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "-m", "ift_engine.cli", "train", str(config)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "IFT_ENGINE_LOAD_PLUGINS": ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("model written to") == 1  # rank 0 reports; rank 1 says nothing
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    # 8 records, batch 2 per rank: one rank alone would take 4 steps; two ranks share them.
    assert metrics["steps"] == 2 and metrics["train_examples"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "train.yaml"]  # no staging left
    assert not (tmp_path / "model" / "checkpoints").exists()  # the finished model, not its checkpoints

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "model").num_parameters() > 0
