"""ift-engine-zh, installed: lexicons, templates and the Chinese ROUGE metric."""

from __future__ import annotations

import random

import pytest
from ift_engine_zh import load_cilin, rouge_zh

from ift_engine import plugins
from ift_engine.augment import SynonymOptions, SynonymReplacement


def test_lexicon_and_templates_are_registered():
    components = plugins.installed_components()
    assert components.lexicons.plugin_of("zh-extended") == "zh"
    assert "实惠" in components.lexicons.get("zh-extended").of("便宜")
    for name in ("sentiment-zh-extra", "keywords-zh", "title-zh"):
        assert len(components.templates.get(name).paraphrases) >= 5


def test_extended_lexicon_drives_synonym_replacement():
    components = plugins.installed_components()
    augmenter = SynonymReplacement(SynonymOptions(rate=1.0, lexicon="zh-extended"), components)
    text = "酒店很干净，价格便宜，服务态度热情。"
    out = augmenter.augment(text, random.Random(0))
    assert out != text and out == augmenter.augment(text, random.Random(0))


def test_cilin_file_via_environment(tmp_path, monkeypatch):
    cilin = tmp_path / "cilin.txt"
    cilin.write_text("Aa01A01= 人 士 人物\nAa01A02# 男人 女人\nEd01A01= 好 良 善\n", encoding="utf-8")
    lexicon = load_cilin(cilin)
    assert lexicon.of("人物") == ("士", "人") or set(lexicon.of("人物")) == {"人", "士"}
    assert lexicon.of("男人") == ()  # '#' lines are related words, not synonyms
    monkeypatch.setenv("IFT_ENGINE_ZH_CILIN", str(cilin))
    assert "善" in plugins.installed_components().lexicons.get("zh-cilin").of("好")


def test_rouge_zh_on_known_strings():
    assert rouge_zh("今天天气很好", "今天天气很好") == pytest.approx(
        {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    )
    scores = rouge_zh("天气很好", "今天天气很好")
    assert scores["rouge1"] == pytest.approx(2 * 1.0 * (4 / 6) / (1.0 + 4 / 6))
    assert scores["rouge2"] == pytest.approx(2 * 1.0 * (3 / 5) / (1.0 + 3 / 5))
    assert rouge_zh("完全无关", "今天天气很好")["rouge1"] == 0.0
    assert rouge_zh("我很喜欢这本书。", "我很喜欢这本书！", unit="word")["rouge1"] == pytest.approx(1.0)
