"""Should training use TRL's SFTTrainer (``completion_only_loss``) instead of the engine's own
labelling? Only if it produces exactly our labels. This compares the two token by token on
TRL's conversational prompt-completion format and records where they differ, so a TRL release
that closes the gap fails this test and the choice gets revisited."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from ift_engine.training.data import Example
from ift_engine.training.tokenize import IGNORE, tokenize_example

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

RECORDS = [
    ("Is the review positive or negative? The hotel was clean.", "positive"),
    ("Write an outline for a short article about honeybees.", "- how bees dance\n- what flowers tell"),
    ("Summarize: the food was cold and the staff were rude.", "cold food, rude staff"),
]


def trl_labels(folder, tmp_path) -> list[list[int]]:
    rows = [
        {"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": c}]}
        for p, c in RECORDS
    ]
    trainer = trl.SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(folder),
        args=trl.SFTConfig(
            output_dir=str(tmp_path), completion_only_loss=True, report_to=[], max_length=256, use_cpu=True
        ),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(folder),
    )
    return [trainer.data_collator([row])["labels"][0].tolist() for row in trainer.train_dataset]


def test_trl_trains_what_we_train_plus_the_newline_after_the_end_of_turn(tiny_causal_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_dir)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    theirs = trl_labels(tiny_causal_dir, tmp_path)
    for (prompt, answer), their_labels in zip(RECORDS, theirs):
        example = Example(prompt=({"role": "user", "content": prompt},), completion=answer)
        ours = tokenize_example(tokenizer, example, 256)
        trained_ours = [t for t in ours["labels"] if t != IGNORE]
        trained_theirs = [t for t in their_labels if t != IGNORE]
        # The same prompt masked, the same answer tokens and end of turn trained ...
        assert their_labels[: len(ours["labels"])] == ours["labels"]
        assert trained_ours[-1] == end_of_turn
        # ... and TRL also trains the template's newline after the end of turn, which ours drops
        # (a model taught to emit it after stopping learns a token nobody reads).
        assert trained_theirs == trained_ours + newline
