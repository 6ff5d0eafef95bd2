"""LoRA adapters as models: kept by training, named in workflows, several on one loaded base,
rows of different adapters (and of the bare base) in one batched decode step, equal to the
merged models; bad references refused when the workflow loads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tokenizer
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from ift_engine import Workflow, train
from ift_engine.errors import TrainError, WorkflowError
from ift_engine.models.base import GenerationSettings
from ift_engine.models.hf_causal import HFCausalLM
from ift_engine.models.resolve import ModelPool, ModelSpec
from ift_engine.models.worker import AdapterWorker, ModelWorker
from ift_engine.plugins import components
from ift_engine.workflow.cache import model_identity

PROMPTS = [
    [{"role": "user", "content": "Write an outline for a short article about honeybees."}],
    [{"role": "user", "content": "Is the sentiment of this review positive or negative?"}],
    [{"role": "user", "content": "The food was cold and the staff were rude."}],
]
GREEDY = GenerationSettings(max_new_tokens=12)
TWO_REVIEWS = [
    {"text": "这个手机非常好用，电池也很耐用，推荐购买！", "output": "正面"},
    {"text": "质量太差了，用了两天就坏了，非常失望。", "output": "负面"},
]


def random_adapter(base: Path, out: Path, seed: int, targets: list[str]) -> Path:
    """A peft LoRA adapter with random (non-zero) weights: its answers differ from the base's."""
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    torch.manual_seed(seed)
    for name, parameter in peft_model.named_parameters():
        if "lora_" in name:
            parameter.data.normal_(0, 0.4)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def two_adapters(tiny_causal_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("adapters")
    return [
        random_adapter(tiny_causal_dir, folder / "one", 1, ["q_proj", "v_proj"]),
        random_adapter(tiny_causal_dir, folder / "two", 2, ["q_proj", "o_proj", "down_proj"]),
    ]


def merged(base: Path, adapter: Path | None) -> HFCausalLM:
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload().eval()
    return HFCausalLM("reference", model, tokenizer)


def spec(base: Path, adapter: Path | None) -> ModelSpec:
    return ModelSpec(name=str(base), adapter=None if adapter is None else str(adapter))


def test_mixed_batch_equals_each_merged_model_token_for_token(tiny_causal_dir, two_adapters):
    """Rows of two adapters and of the bare base, submitted together to the one worker of the
    shared base, decode in one batch and answer exactly as the merged models do alone."""
    pool = ModelPool(components())
    adapters: list[Path | None] = [None, *two_adapters]
    workers = [pool.worker(spec(tiny_causal_dir, a)) for a in adapters]
    assert isinstance(workers[0], ModelWorker)
    assert all(isinstance(w, AdapterWorker) and w.worker is workers[0] for w in workers[1:])
    sizes: list[int] = []
    workers[0].stats.on_batch = sizes.append
    futures = [w.generate(PROMPTS, GREEDY) for w in workers]
    got = [[c.text for c in f.result()] for f in futures]
    pool.close()
    assert max(sizes) == 9  # three prompts of each of the three models in one decode step
    want = [merged(tiny_causal_dir, a).generate(PROMPTS, GREEDY) for a in adapters]
    assert got == want
    assert len({tuple(answers) for answers in want}) == 3  # the adapters do change the answers


def test_adapter_scores_and_classifies_as_its_merged_model(tiny_causal_dir, two_adapters):
    pool = ModelPool(components())
    view = pool.get(spec(tiny_causal_dir, two_adapters[1]))
    reference = merged(tiny_causal_dir, two_adapters[1])
    labels = ["positive", "negative"]
    assert torch.allclose(
        torch.tensor(view.classify(PROMPTS, labels)),
        torch.tensor(reference.classify(PROMPTS, labels)),
        atol=1e-5,
    )
    assert view.generate(PROMPTS[:1], GREEDY) == reference.generate(PROMPTS[:1], GREEDY)
    pool.close()


def test_train_keeps_the_adapter_and_a_workflow_runs_it_by_folder(tiny_causal_dir, tmp_path):
    fast = {
        "epochs": 2,
        "batch_size": 2,
        "learning_rate": 5e-3,
        "logging_steps": 1,
        "max_length": 128,
        "lora": {"r": 4, "alpha": 8, "targets": ["q_proj", "v_proj"], "merge": False},
    }
    out = tmp_path / "adapter"
    train(
        base_model=str(tiny_causal_dir),
        output=str(out),
        datasets=[{"records": TWO_REVIEWS, "template": "sentiment-zh"}],
        eval={"split": 0},
        training=fast,
        progress=False,
    )
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert not (out / "model.safetensors").exists()  # the adapter alone, not a merged copy
    manifest = json.loads((out / "ift_model.json").read_text())
    assert manifest["adapter"]["base"] == str(tiny_causal_dir.resolve())
    assert manifest["adapter"]["base_fingerprint"] and manifest["adapter"]["base_shape"]["hidden_size"] == 64
    assert "adapter_model.safetensors" in manifest["files"]
    node = {"id": "s", "template": "sentiment-zh", "inputs": {"text": "$input.text"}}
    by_folder = Workflow.from_dict({"name": "s", "inputs": {"text": {}}, "model": str(out), "nodes": [node]})
    named = Workflow.from_dict(
        {
            "name": "s",
            "inputs": {"text": {}},
            "model": {"base": str(tiny_causal_dir), "adapter": str(out)},
            "nodes": [node],
        }
    )
    reference = merged(tiny_causal_dir, out)
    probabilities = reference.classify(
        [by_folder.graph.node("s").template.render({"text": "很好"}).messages], ["正面", "负面"]
    )
    expected = "正面" if probabilities[0][0] >= probabilities[0][1] else "负面"
    assert by_folder.run(text="很好")["s"] == named.run(text="很好")["s"] == expected
    with pytest.raises(TrainError, match="keep_adapter"):
        train(
            base_model=str(tiny_causal_dir),
            output=str(tmp_path / "other"),
            datasets=[{"records": TWO_REVIEWS, "template": "sentiment-zh"}],
            training={**fast, "keep_adapter": True},
            progress=False,
        )


def test_the_cache_keys_on_the_adapter_content(tiny_causal_dir, two_adapters, tmp_path):
    pool = ModelPool(components())
    adapter = Path(shutil.copytree(two_adapters[0], tmp_path / "adapter"))
    first = model_identity(pool, spec(tiny_causal_dir, adapter))
    assert first == model_identity(pool, spec(tiny_causal_dir, adapter))
    assert first != model_identity(pool, spec(tiny_causal_dir, two_adapters[0]))
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes())  # retrained: new file times
    assert model_identity(pool, spec(tiny_causal_dir, adapter)) != first


@pytest.fixture
def trained_adapter(tiny_causal_dir, two_adapters, tmp_path) -> Path:
    """An adapter folder with the manifest ``ift train`` writes (base, shape, fingerprint)."""
    from ift_engine.training.run import adapter_record

    out = Path(shutil.copytree(two_adapters[0], tmp_path / "outline"))
    record = adapter_record(str(tiny_causal_dir), str(tiny_causal_dir))
    (out / "ift_model.json").write_text(json.dumps({"backend": "hf-causal", "adapter": record}))
    return out


def other_base(folder: Path, hidden: int) -> Path:
    tokenizer = build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def workflow_file(tmp_path: Path, model: object) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "w",
                "inputs": {"topic": {}},
                "nodes": [
                    {
                        "id": "outline",
                        "template": "outline-en",
                        "inputs": {"topic": "$input.topic"},
                        "model": model,
                    }
                ],
            }
        )
    )
    return path


def bad_references(tiny_causal_dir: Path, trained_adapter: Path, tmp_path: Path) -> list[tuple[object, str]]:
    copy = Path(shutil.copytree(tiny_causal_dir, tmp_path / "copy"))
    wider = other_base(tmp_path / "wider", 128)
    return [
        (
            {"base": str(tiny_causal_dir), "adapter": str(tmp_path / "missing")},
            r"field 'model.adapter': adapter .*missing' not found",
        ),
        (
            {"base": str(tiny_causal_dir), "adapter": str(tiny_causal_dir)},
            r"field 'model.adapter': .*holds no LoRA adapter",
        ),
        (
            {"base": str(copy), "adapter": str(trained_adapter)},
            r"field 'model.base': .*trained on other files",
        ),
        (
            {"base": str(wider), "adapter": str(trained_adapter)},
            r"field 'model.base': .*hidden_size 64; base .* has 128",
        ),
        (
            {"base": str(tmp_path / "nobase"), "adapter": str(trained_adapter)},
            r"field 'model.base': model .*nobase' not found",
        ),
        (
            {"name": "mock", "backend": "mock", "adapter": str(trained_adapter)},
            r"field 'model.adapter': backend 'mock' cannot apply",
        ),
    ]


def test_bad_adapter_references_are_one_line_errors_naming_node_and_field(
    tiny_causal_dir, trained_adapter, tmp_path
):
    for model, message in bad_references(tiny_causal_dir, trained_adapter, tmp_path):
        with pytest.raises(WorkflowError, match=message) as caught:
            Workflow.from_yaml(workflow_file(tmp_path, model))
        assert "\n" not in str(caught.value) and "node 'outline'" in str(caught.value)
    assert Workflow.from_yaml(workflow_file(tmp_path, str(trained_adapter)))  # the good one loads


def test_cli_validate_and_run_exit_2_on_a_bad_adapter(tiny_causal_dir, trained_adapter, tmp_path):
    copy = Path(shutil.copytree(tiny_causal_dir, tmp_path / "copy"))
    path = workflow_file(tmp_path, {"base": str(copy), "adapter": str(trained_adapter)})
    for command in (["validate", str(path)], ["run", str(path), "--input", "topic=bees"]):
        done = subprocess.run(
            [sys.executable, "-m", "ift_engine.cli", *command], capture_output=True, text=True
        )
        assert done.returncode == 2, done.stderr
        assert "node 'outline', field 'model.base'" in done.stderr and done.stderr.count("\n") == 1


@pytest.fixture(scope="session")
def onnx_home(tmp_path_factory) -> Path:
    """The engine's cache (exports made on first use) for the ONNX tests."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def onnx_adapters(tiny_causal_dir, two_adapters, tmp_path_factory, onnx_home) -> list[Path]:
    """Two adapters of one shape exported by `ift export`: the base once, each adapter a file."""
    from ift_engine.onnx.export import export_model

    folder = tmp_path_factory.mktemp("onnx-adapters")
    third = random_adapter(tiny_causal_dir, folder / "three", 3, ["q_proj", "v_proj"])
    outs = [folder / "one-onnx", folder / "three-onnx"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IFT_ENGINE_HOME", str(onnx_home))
        for adapter, out in zip([two_adapters[0], third], outs):
            export_model(adapter, out)
    return outs


def test_onnx_export_of_adapters_exports_the_base_once(onnx_adapters):
    manifests = [json.loads((out / "ift_model.json").read_text()) for out in onnx_adapters]
    assert manifests[0]["adapter"]["base_export"] == manifests[1]["adapter"]["base_export"]
    for out, manifest in zip(onnx_adapters, manifests):
        assert sorted(p.name for p in out.iterdir()) == ["adapter.onnx_adapter", "ift_model.json"]
        assert manifest["parity"]["fp32"]["max_abs_logit_diff"] < 1e-3
        assert manifest["parity"]["fp32"]["greedy_agreement"] == 1.0


def test_onnx_adapters_share_one_base_and_answer_as_their_merged_models(
    tiny_causal_dir, two_adapters, onnx_adapters, onnx_home, monkeypatch
):
    monkeypatch.setenv("IFT_ENGINE_HOME", str(onnx_home))
    pool = ModelPool(components())
    workers = [pool.worker(ModelSpec(name=str(out))) for out in onnx_adapters]
    assert all(isinstance(w, AdapterWorker) for w in workers)
    assert workers[0].worker is workers[1].worker  # type: ignore[union-attr]
    futures = [w.generate(PROMPTS, GREEDY) for w in workers]
    got = [[c.text for c in f.result()] for f in futures]
    sources = [Path(json.loads((out / "ift_model.json").read_text())["source"]) for out in onnx_adapters]
    assert got == [merged(tiny_causal_dir, source).generate(PROMPTS, GREEDY) for source in sources]
    # A PyTorch adapter on backend onnx is exported on first use, onto the same base export.
    view = pool.get(ModelSpec(name=str(tiny_causal_dir), adapter=str(two_adapters[0]), backend="onnx"))
    assert view.generate(PROMPTS, GREEDY) == got[0]
    assert len(list((onnx_home / "onnx").glob("*-lora-*"))) == 1
    pool.close()


def test_int4_adapter_export_keeps_the_lora_branches_in_fp32(two_adapters, tmp_path, monkeypatch):
    import onnx

    from ift_engine.onnx.export import export_model

    monkeypatch.setenv("IFT_ENGINE_HOME", str(tmp_path / "home"))
    manifest = export_model(two_adapters[1], tmp_path / "int4", quantize="int4")
    assert set(manifest["parity"]) == {"int4"} and manifest["parity"]["int4"]["top1_agreement"] > 0.5
    graph = onnx.load(Path(manifest["adapter"]["base_export"]) / "model.onnx", load_external_data=False).graph
    lora = [n.op_type for n in graph.node if "/lora_" in n.name and "MatMul" in n.name]
    assert lora and set(lora) == {"MatMul"}
    assert "MatMulNBits" in {n.op_type for n in graph.node}
