"""benchmarks/gpu_check.sh: without a GPU it says so in one line and exits 0; every step runs on
the CPU with tiny counts (``--device cpu --quick``), so the check is known to work before a GPU
machine is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def gpu_check(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_without_a_gpu_it_says_so_and_exits_0() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = gpu_check(timeout=120)
    assert (
        done.returncode == 0
        and done.stdout.strip() == "gpu_check: no CUDA GPU on this machine; nothing measured"
    )


@pytest.mark.integration
def test_every_step_runs_on_the_cpu_in_quick_mode() -> None:
    done = gpu_check("--device", "cpu", "--quick", timeout=1200)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "step failed" not in output, output[-3000:]
    results = ROOT / "benchmarks" / "results"
    gpu = json.loads((results / "gpu-cpu-quick.json").read_text())
    assert [row["batch"] for row in gpu["rows"]] == [1, 2] and all(row["worker"] > 0 for row in gpu["rows"])
    engine = json.loads((results / "engine-cpu-quick.json").read_text())
    assert engine["rows"][0]["parity"] == "6/6" and all(row["tok_s"] > 0 for row in engine["rows"])
    assert engine["rows"][1]["parity"] == "6/6"  # the worker: the answers of one generator each
    serve = json.loads((results / "serve-cpu-quick.json").read_text())
    assert all(row["failed"] == 0 and row["tok_s"] > 0 for row in serve["rows"])
