"""ONNX export of tiny random models: parity with PyTorch, the onnx backend (onnxruntime-genai for
causal LMs, an ONNX Runtime session for classifiers), weight formats."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ift_engine import GenerationSettings, IftError, ModelError, Workflow
from ift_engine.models.hf_causal import CausalLMOptions, HFCausalLM
from ift_engine.models.hf_classifier import ClassifierOptions, HFClassifier
from ift_engine.models.token_average import average_decode
from ift_engine.onnx.backend import GenaiCausalLM, OnnxClassifier, OnnxModel, OnnxOptions
from ift_engine.onnx.export import ExportError, export_model

PROMPTS = [
    [{"role": "user", "content": "Write an outline for a short article about honeybees."}],
    [{"role": "user", "content": "Is it positive?"}],
    [
        {
            "role": "user",
            "content": "The food was cold and the staff were rude. I will not come back.",
        }
    ],
]
GREEDY = GenerationSettings(max_new_tokens=12)
CPU = OnnxOptions(device="cpu")


def quiet_export(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's ONNX tracer warnings
        return export_model(*args, **kwargs)


@pytest.fixture(scope="module")
def causal_export(tiny_causal_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "causal"
    quiet_export(tiny_causal_dir, out)
    return out


def test_export_writes_a_model_folder_with_parity(causal_export):
    manifest = json.loads((causal_export / "ift_model.json").read_text())
    assert (causal_export / "model.onnx").exists() and (causal_export / "tokenizer.json").exists()
    assert (causal_export / "genai_config.json").exists()
    assert manifest["backend"] == "onnx" and manifest["task"] == "text-generation"
    assert manifest["runtime"] == "onnxruntime-genai"
    parity = manifest["parity"]["fp32"]
    assert parity["max_abs_logit_diff"] < 1e-4
    assert parity["greedy_agreement"] == 1.0


def test_onnx_generation_matches_pytorch_batched_and_unbatched(tiny_causal_dir, causal_export):
    reference = HFCausalLM.load("pt", str(tiny_causal_dir), CausalLMOptions(device="cpu"))
    onnx = OnnxModel.load("ort", str(causal_export), CPU)
    assert isinstance(onnx, GenaiCausalLM)
    for settings in (GREEDY, GREEDY.model_copy(update={"repetition_penalty": 1.3})):
        batched = onnx.generate(PROMPTS, settings)
        single = [onnx.generate([p], settings)[0] for p in PROMPTS]
        # Right padding that the generator masks: batched equals one-at-a-time, and both PyTorch.
        assert batched == single == reference.generate(PROMPTS, settings)
    labels = ["positive", "negative"]
    np.testing.assert_allclose(onnx.score(PROMPTS, labels), reference.score(PROMPTS, labels), atol=1e-3)
    np.testing.assert_allclose(
        onnx.score(PROMPTS, labels, mean=True), reference.score(PROMPTS, labels, mean=True), atol=1e-3
    )
    np.testing.assert_allclose(onnx.classify(PROMPTS, labels), reference.classify(PROMPTS, labels), atol=1e-4)


def test_onnx_worker_cohorts_give_one_at_a_time_answers_and_let_cancelled_rows_go(causal_export):
    import time

    from ift_engine.models.worker import ModelWorker

    onnx = OnnxModel.load("ort", str(causal_export), CPU)
    settings = GREEDY.model_copy(update={"repetition_penalty": 1.3})
    alone = [onnx.generate([p], settings)[0] for p in PROMPTS]
    worker = ModelWorker(onnx)
    try:
        short = worker.generate([PROMPTS[0]], settings.model_copy(update={"max_new_tokens": 1}))
        first = worker.generate(PROMPTS[:2], settings)
        gone = worker.generate([PROMPTS[1]], settings.model_copy(update={"max_new_tokens": 500}))
        time.sleep(0.02)  # later rows start in a cohort of their own, beside the running one
        later = [worker.generate([p], settings) for p in PROMPTS[2:]]
        assert gone.cancel()
        answers = [c.text for c in first.result(60)] + [f.result(60)[0].text for f in later]
        assert short.result(60)[0].finish in ("length", "stop")
    finally:
        worker.close()
    assert answers == alone


def test_onnx_streams_the_answers_it_returns(causal_export):
    onnx = OnnxModel.load("ort", str(causal_export), CPU)
    pieces: dict[int, str] = {}
    answers = onnx.generate_stream(
        PROMPTS, GREEDY, lambda i, text: pieces.update({i: pieces.get(i, "") + text})
    )
    assert answers == onnx.generate(PROMPTS, GREEDY)
    assert [pieces.get(i, "") for i in range(len(PROMPTS))] == answers


def test_token_average_runs_on_onnx_members(tiny_causal_dir, causal_export):
    """One ONNX member reproduces its own generate; an ONNX and a PyTorch copy of one model
    average to the same answers (their distributions agree)."""
    onnx = OnnxModel.load("ort", str(causal_export), CPU)
    reference = HFCausalLM.load("pt", str(tiny_causal_dir), CausalLMOptions(device="cpu"))
    assert average_decode([onnx], [1.0], PROMPTS, GREEDY) == onnx.generate(PROMPTS, GREEDY)
    assert average_decode([onnx, reference], [0.5, 0.5], PROMPTS, GREEDY) == reference.generate(
        PROMPTS, GREEDY
    )


def test_classifier_export_and_backend(tiny_classifier_dir, tmp_path):
    manifest = quiet_export(tiny_classifier_dir, tmp_path / "clf")
    assert manifest["task"] == "text-classification"
    assert manifest["parity"]["fp32"]["label_agreement"] == 1.0
    onnx = OnnxModel.load("ort", str(tmp_path / "clf"), CPU)
    assert isinstance(onnx, OnnxClassifier)
    reference = HFClassifier.load("pt", str(tiny_classifier_dir), ClassifierOptions(device="cpu"))
    labels = ["positive", "negative"]
    np.testing.assert_allclose(onnx.classify(PROMPTS, labels), reference.classify(PROMPTS, labels), atol=1e-4)


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_causal_weight_formats_load_run_and_report_their_cost(tiny_causal_dir, tmp_path, method):
    manifest = quiet_export(tiny_causal_dir, tmp_path / method, quantize=method)
    assert set(manifest["parity"]) == {"fp32", method} and manifest["quantize"] == method
    assert 0.0 <= manifest["parity"][method]["greedy_agreement"] <= 1.0
    onnx = OnnxModel.load("q", str(tmp_path / method), CPU)
    answers = onnx.generate(PROMPTS, GREEDY)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_quantised_classifiers_load_run_and_report_their_cost(tiny_classifier_dir, tmp_path, method):
    manifest = quiet_export(tiny_classifier_dir, tmp_path / method, quantize=method)
    assert set(manifest["parity"]) == {"fp32", method}
    assert 0.0 <= manifest["parity"][method]["label_agreement"] <= 1.0
    rows = OnnxModel.load("q", str(tmp_path / method), CPU).classify(PROMPTS, ["positive", "negative"])
    assert all(abs(sum(row) - 1.0) < 1e-5 for row in rows)


def test_a_format_the_model_kind_lacks_is_refused_before_any_work(
    tiny_causal_dir, tiny_classifier_dir, tmp_path
):
    with pytest.raises(
        ExportError, match="--quantize fp16: a hf-classifier model exports to fp32 or int8 or int4"
    ):
        quiet_export(tiny_classifier_dir, tmp_path / "b", quantize="fp16")
    with pytest.raises(ExportError, match="--quantize fp16 is for GPUs: add --device cuda"):
        quiet_export(tiny_causal_dir, tmp_path / "c", quantize="fp16")
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_leaves_nothing_behind(tiny_causal_dir, tmp_path):
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        quiet_export(tiny_causal_dir, tmp_path / "strict", atol=0.0)
    assert list(tmp_path.iterdir()) == []


def test_workflow_backend_switch_exports_once_on_first_use(tiny_causal_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("IFT_ENGINE_HOME", str(tmp_path))
    doc = {
        "name": "switch",
        "inputs": {"topic": {}},
        "model": str(tiny_causal_dir),
        "backend": "onnx",
        "generation": {"max_new_tokens": 8},
        "nodes": [{"id": "outline", "template": "outline-en", "inputs": {"topic": "$input.topic"}}],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = Workflow.from_dict(doc).run(topic="bees")
    exports = list((tmp_path / "onnx").iterdir())
    assert len(exports) == 1
    stamp = (exports[0] / "model.onnx").stat().st_mtime_ns
    from ift_engine.models.resolve import ModelPool
    from ift_engine.plugins import components

    second = Workflow.from_dict(doc, pool=ModelPool(components())).run(topic="bees")
    assert (exports[0] / "model.onnx").stat().st_mtime_ns == stamp  # reused, not re-exported
    assert first["outline"] == second["outline"]
    pytorch = Workflow.from_dict({**doc, "backend": None}).run(topic="bees")
    assert first["outline"] == pytorch["outline"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_provider_without_a_gpu_is_an_error(causal_export):
    with pytest.raises(ModelError, match="device 'cuda' was asked for but ONNX Runtime has no usable CUDA"):
        OnnxModel.load("ort", str(causal_export), OnnxOptions(device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_export_for_cuda_runs(tiny_causal_dir, tmp_path):
    manifest = quiet_export(tiny_causal_dir, tmp_path / "fp16", quantize="fp16", device="cuda")
    assert manifest["parity"]["fp16"]["greedy_agreement"] > 0.5
    gpu = OnnxModel.load("g", str(tmp_path / "fp16"), OnnxOptions(device="cuda"))
    assert len(gpu.generate(PROMPTS, GREEDY)) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_provider_matches_cpu(causal_export):
    gpu = OnnxModel.load("ort", str(causal_export), OnnxOptions(device="cuda"))
    assert isinstance(gpu, GenaiCausalLM) and gpu.device == "cuda"
    assert gpu.generate(PROMPTS, GREEDY) == OnnxModel.load("ort", str(causal_export), CPU).generate(
        PROMPTS, GREEDY
    )


def test_cli_export_prints_parity(tiny_causal_dir, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ift_engine.cli",
            "export",
            str(tiny_causal_dir),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "fp32: max_abs_logit_diff" in done.stdout and "greedy_agreement 1" in done.stdout


# -- never losing the user's files ---------------------------------------------------------------


def ift_export(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ift_engine.cli", "export", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_refuses_targets_it_would_damage_before_any_work(tiny_causal_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (tmp_path / "afile").write_text("x")
    source_before = snapshot(tiny_causal_dir)
    cases = {
        "a folder of user files": (
            [str(tiny_causal_dir), "--out", str(mine)],
            "holds no previous ONNX export",
        ),
        "... even with --overwrite": (
            [str(tiny_causal_dir), "--out", str(mine), "--overwrite"],
            "holds no previous ONNX export",
        ),
        "the current folder": ([str(tiny_causal_dir), "--out", "."], "would replace the current folder"),
        "the source folder": (
            [str(tiny_causal_dir), "--out", str(tiny_causal_dir), "--overwrite"],
            "which it reads",
        ),
        "a parent of the source": (
            [str(tiny_causal_dir), "--out", str(tiny_causal_dir.parent), "--overwrite"],
            "would replace",
        ),
        "a file": ([str(tiny_causal_dir), "--out", str(tmp_path / "afile")], "is a file"),
        "a folder under a file": (
            [str(tiny_causal_dir), "--out", str(tmp_path / "afile" / "sub")],
            "afile is a file, not a folder; choose another path for the ONNX export",
        ),
    }
    for case, (args, message) in cases.items():
        code, stderr = finish(ift_export(*args, cwd=mine if "." in args else tmp_path))
        assert code == 2 and message in stderr and "Traceback" not in stderr, f"{case}: {stderr}"
    assert snapshot(mine) == {"thesis.tex": b"years of work"}
    assert snapshot(tiny_causal_dir) == source_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "mine"]


def test_overwrite_replaces_only_a_previous_export(tiny_causal_dir, causal_export, tmp_path):
    import shutil

    out = tmp_path / "export"
    shutil.copytree(causal_export, out)
    with pytest.raises(IftError, match="a previous ONNX export is there; pass --overwrite"):
        quiet_export(tiny_causal_dir, out)
    (out / "notes.txt").write_text("mine")  # a file the export did not write: never deleted
    code, stderr = finish(ift_export(str(tiny_causal_dir), "--out", str(out), "--overwrite"))
    assert code == 2 and "did not write (notes.txt); move them away" in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    (out / "model.onnx").write_bytes(b"stale")
    quiet_export(tiny_causal_dir, out, overwrite=True)
    assert (out / "model.onnx").read_bytes() != b"stale"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging, old copy or lock left


def test_sigkill_during_export_leaves_the_old_export_intact(tiny_causal_dir, causal_export, tmp_path):
    import shutil

    out = tmp_path / "export"
    shutil.copytree(causal_export, out)
    before = snapshot(out)
    process = ift_export(str(tiny_causal_dir), "--out", str(out), "--overwrite")
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".export.exporting-*/fp32/*")):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(tmp_path.glob(".export.exporting-*")), "the kill came after the export finished"
    assert snapshot(out) == before
    lookalike = tmp_path / ".export.exporting-999999-mine"  # a user's folder named like staging
    lookalike.mkdir()
    (lookalike / "mine.txt").write_text("keep")
    code, stderr = finish(ift_export(str(tiny_causal_dir), "--out", str(out), "--overwrite"))
    assert code == 0, stderr
    # the dead run's staging is gone (known by its marker); the lookalike is not the engine's
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export.exporting-999999-mine", "export"]
    assert (lookalike / "mine.txt").read_text() == "keep"


def test_a_second_export_to_the_same_folder_fails_at_once(tiny_causal_dir, tmp_path):
    from ift_engine.files import OutputLock

    out = tmp_path / "export"
    with OutputLock(out, "ONNX export"):  # as a running export holds it
        started = time.perf_counter()
        code, stderr = finish(ift_export(str(tiny_causal_dir), "--out", str(out)))
    assert code == 2 and f"{out}: another process is writing the ONNX export there" in stderr, stderr
    assert time.perf_counter() - started < 60 and not out.exists()


def test_a_damaged_genai_config_is_a_one_line_model_error(causal_export, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(causal_export, broken)
    (broken / "genai_config.json").write_text("{")
    with pytest.raises(ModelError, match="genai_config.json: not valid JSON"):
        OnnxModel.load("x", str(broken), CPU)
    (broken / "genai_config.json").write_text('{"model": {"context_length": "long"}}')
    with pytest.raises(ModelError, match="no valid 'model' section"):
        OnnxModel.load("x", str(broken), CPU)
