"""The PyTorch backends on tiny random-weight models built in the test (no downloads)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from ift_engine import GenerationSettings, ModelError, ModelSpec, Workflow
from ift_engine.models.hf_causal import CausalLMOptions, HFCausalLM
from ift_engine.models.hf_classifier import ClassifierOptions, HFClassifier
from ift_engine.models.resolve import infer_backend

PROMPTS = [
    [{"role": "user", "content": "Write an outline for a short article about honeybees."}],
    [{"role": "user", "content": "Is it positive?"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "The food was cold and the staff were rude."},
    ],
]
GREEDY = GenerationSettings(max_new_tokens=12)


@pytest.fixture(scope="module")
def causal(tiny_causal_dir) -> HFCausalLM:
    return HFCausalLM.load("tiny", str(tiny_causal_dir), CausalLMOptions(device="cpu", batch_size=8))


def test_batched_greedy_equals_one_at_a_time(causal):
    batched = causal.generate(PROMPTS, GREEDY)
    single = [causal.generate([p], GREEDY)[0] for p in PROMPTS]
    assert batched == single
    assert all(isinstance(text, str) for text in batched)


def test_seeded_sampling_is_repeatable(causal):
    settings = GenerationSettings(max_new_tokens=12, temperature=1.0, seed=3)
    assert causal.generate(PROMPTS, settings) == causal.generate(PROMPTS, settings)


def test_generation_stops_at_end_of_turn(tiny_causal_dir, causal):
    # Force the end-of-turn token to be the most likely next token: the answer must be empty.
    eos = causal.tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[eos] = 1.0
        model.model.norm.weight.fill_(1.0)
    forced = HFCausalLM("forced", model, causal.tokenizer)
    assert eos in forced.stop_ids
    assert forced.generate(PROMPTS[:1], GREEDY) == [""]


def test_score_is_the_log_likelihood_of_the_answer(causal):
    choices = ["positive", "negative"]
    scores = causal.score(PROMPTS[:2], choices)
    # Reference: one unpadded forward pass over prompt + choice + end of turn.
    tok = causal.tokenizer
    for p, row in zip(PROMPTS[:2], scores):
        prompt_ids = tok(
            tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False),
            add_special_tokens=False,
        )["input_ids"]
        for choice, got in zip(choices, row):
            ids = tok(choice, add_special_tokens=False)["input_ids"] + [causal.stop_ids[0]]
            full = torch.tensor([prompt_ids + ids])
            with torch.no_grad():
                logprobs = causal.model(full).logits[0].log_softmax(-1)
            want = sum(float(logprobs[len(prompt_ids) - 1 + i, t]) for i, t in enumerate(ids))
            assert got == pytest.approx(want, abs=1e-4)


def test_classify_is_a_distribution_over_labels(causal):
    rows = causal.classify(PROMPTS, ["positive", "negative", "neutral"])
    for row in rows:
        assert len(row) == 3 and sum(row) == pytest.approx(1.0)


def test_classifier_maps_labels_by_name(tiny_classifier_dir):
    model = HFClassifier.load("clf", str(tiny_classifier_dir), ClassifierOptions(device="cpu"))
    forward = model.classify(PROMPTS, ["negative", "positive"])
    reverse = model.classify(PROMPTS, ["Positive", "NEGATIVE"])
    for a, b in zip(forward, reverse):
        assert a == pytest.approx(b[::-1])
        assert sum(a) == pytest.approx(1.0)
    with pytest.raises(ModelError, match="has no label 'neutral' \\(its labels: negative, positive\\)"):
        model.classify(PROMPTS, ["neutral", "positive"])
    with pytest.raises(ModelError, match="cannot generate"):
        model.generate(PROMPTS, GREEDY)


def test_backend_is_inferred_from_the_folder(tiny_causal_dir, tiny_classifier_dir):
    assert infer_backend(tiny_causal_dir) == "hf-causal"
    assert infer_backend(tiny_classifier_dir) == "hf-classifier"


def test_workflow_runs_on_folders(tiny_causal_dir, tiny_classifier_dir):
    wf = Workflow.from_dict(
        {
            "name": "mixed",
            "inputs": {"text": {}},
            "nodes": [
                {
                    "id": "topic",
                    "template": "topic-en",
                    "inputs": {"text": "$input.text"},
                    "model": str(tiny_causal_dir),
                    "generation": {"max_new_tokens": 5},
                },
                {
                    "id": "mood",
                    "template": "sentiment-en",
                    "inputs": {"text": "$input.text"},
                    "model": str(tiny_classifier_dir),
                },
                {
                    "id": "mood_lm",
                    "template": "sentiment-en",
                    "inputs": {"text": "$input.text"},
                    "model": str(tiny_causal_dir),
                },
            ],
        }
    )
    result = wf.run(text="The hotel was clean and quiet.")
    assert isinstance(result["topic"], str)
    assert result["mood"] in ("positive", "negative")
    assert sum(result.nodes["mood_lm"].probabilities.values()) == pytest.approx(1.0)
    # The two nodes on the causal folder share one loaded model.
    assert wf.pool.get(ModelSpec(name=str(tiny_causal_dir))) is wf.pool.get(
        ModelSpec(name=str(tiny_causal_dir))
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_a_gpu_is_an_error_not_a_fallback(tiny_causal_dir):
    with pytest.raises(ModelError, match="device 'cuda' was asked for but PyTorch sees no CUDA GPU"):
        HFCausalLM.load("tiny", str(tiny_causal_dir), CausalLMOptions(device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_generation_matches_cpu(tiny_causal_dir, causal):
    gpu = HFCausalLM.load("tiny", str(tiny_causal_dir), CausalLMOptions(device="cuda", dtype="float32"))
    assert gpu.device.type == "cuda"
    assert gpu.generate(PROMPTS, GREEDY) == causal.generate(PROMPTS, GREEDY)
