"""Shared fixtures: tiny random-weight models built from a config (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Write an outline for a short article about honeybees.",
    "Is the sentiment of this review positive or negative? The hotel was clean and quiet.",
    "positive negative neutral summary topic outline content article section heading",
    "The food was cold and the staff were rude. I will not come back.",
    "Bees dance to tell other bees where flowers are. 这家酒店很干净，服务很好。",
    "{ } $ 0 1 2 3 4 5 6 7 8 9 - * # : , . ! ?",
]


def build_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS * 4,
        vocab_size=400,
        min_frequency=1,
        special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
    )
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    return tokenizer


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with random weights and a ChatML tokenizer, saved as a model folder
    (heads of 16: onnxruntime-genai's attention kernel takes no smaller)."""
    folder = tmp_path_factory.mktemp("tiny-causal")
    tokenizer = build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT sequence classifier (labels negative/positive) with random weights."""
    folder = tmp_path_factory.mktemp("tiny-classifier")
    tokenizer = build_tokenizer(folder)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Each test loads the plugins a new process would, and has an empty answer cache."""
    monkeypatch.setenv("IFT_ENGINE_CACHE", str(tmp_path / "answer-cache"))
    monkeypatch.delenv("IFT_ENGINE_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("IFT_ENGINE_STRICT_PLUGINS", raising=False)
    yield
