"""Instruction fine-tuning on tiny random models: masking, data formats, training, resume."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time

import pytest
from transformers import AutoTokenizer

from ift_engine import IftError, Workflow, train
from ift_engine.augment import (
    RandomDeletion,
    RandomSwap,
    RateOptions,
    SynonymOptions,
    SynonymReplacement,
)
from ift_engine.plugins import components
from ift_engine.training.data import Example, ExampleBuilder
from ift_engine.training.examples import collect_examples
from ift_engine.training.spec import TrainSpec
from ift_engine.training.tokenize import IGNORE, tokenize_example
from ift_engine.training.trainer import TrainError

TWO_REVIEWS = [
    {"text": "这个手机非常好用，电池也很耐用，推荐购买！", "output": "正面"},
    {"text": "质量太差了，用了两天就坏了，非常失望。", "output": "负面"},
]
FAST = {
    "epochs": 2,
    "batch_size": 2,
    "learning_rate": 5e-3,
    "logging_steps": 1,
    "save_steps": 2,
    "max_length": 128,
    "lora": {"r": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]},
}


def sentiment_example(text: str, output: str) -> Example:
    template = components().templates.get("sentiment-zh")
    return Example(template.render({"text": text}).messages, output, "sentiment", template.labels, 0)


def test_labels_mask_everything_but_the_answer_and_end_of_turn(tiny_causal_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_dir)
    example = sentiment_example(TWO_REVIEWS[0]["text"], "正面")
    features = tokenize_example(tokenizer, example, max_length=512)
    ids, labels = features["input_ids"], features["labels"]
    assert len(ids) == len(labels) == len(features["attention_mask"])  # no "labels length differs"
    trained = [t for t, label in zip(ids, labels) if label != IGNORE]
    # Exactly the answer's tokens plus the end-of-turn token are trained, at the very end.
    answer = tokenizer("正面", add_special_tokens=False)["input_ids"]
    assert trained == answer + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    first = labels.index(next(label for label in labels if label != IGNORE))
    assert all(label == IGNORE for label in labels[:first])
    assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")


def test_truncation_keeps_the_answer(tiny_causal_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_dir)
    long = sentiment_example("很好。" * 200, "正面")
    features = tokenize_example(tokenizer, long, max_length=64)
    assert len(features["input_ids"]) == 64
    trained = [t for t, label in zip(features["input_ids"], features["labels"]) if label != IGNORE]
    assert tokenizer.decode(trained).startswith("正面")
    assert tokenizer.decode(features["input_ids"]).rstrip().endswith("<|im_start|>assistant\n正面<|im_end|>")


def test_all_formats_load(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"instruction": "Add", "input": "1+1", "output": "2"}) + "\n"
    )
    (tmp_path / "b.json").write_text(json.dumps([{"prompt": "Hi", "completion": "Hello"}]))
    (tmp_path / "c.csv").write_text("question,answer\nCapital of France?,Paris\n")
    (tmp_path / "d.jsonl").write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "2+2?"},
                    {"role": "assistant", "content": "4"},
                ]
            }
        )
        + "\n"
    )
    spec = TrainSpec(
        base_model="x",
        output="y",
        eval={"split": 0},
        datasets=[
            {"path": str(tmp_path / "a.jsonl")},
            {"path": str(tmp_path / "b.json")},
            {
                "path": str(tmp_path / "c.csv"),
                "format": "prompt-completion",
                "columns": {"prompt": "question", "completion": "answer"},
            },
            {"path": str(tmp_path / "d.jsonl")},
            {"records": TWO_REVIEWS[:1], "template": "sentiment-zh"},
        ],
    )
    train_examples, _ = collect_examples(spec, components())
    by_answer = {e.completion: e for e in train_examples}
    assert by_answer["2"].prompt[-1]["content"] == "Add\n\n1+1"
    assert by_answer["Hello"].prompt[-1]["content"] == "Hi"
    assert by_answer["Paris"].prompt[-1]["content"] == "Capital of France?"
    assert [m["role"] for m in by_answer["4"].prompt] == ["system", "user"]
    assert TWO_REVIEWS[0]["text"] in by_answer["正面"].prompt[-1]["content"]


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (
            '{"instruction": "x"}\n',
            "bad.jsonl",
            "bad.jsonl:1: field 'output' must be a non-empty string",
        ),
        (
            '{"instruction": "x", "output": "y"}\nnot json\n',
            "bad.jsonl",
            "bad.jsonl:2: not valid JSON",
        ),
        (
            '{"text": "x", "output": "maybe"}\n',
            "bad.jsonl",
            "field 'output' is 'maybe', not one of ['正面', '负面']",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "?"}]}\n',
            "bad.jsonl",
            "must end with the assistant's answer",
        ),
        ("a,b\n1,2\n", "bad.csv", "bad.csv:2: record has none of instruction/prompt/messages"),
        ("x", "bad.txt", "unknown dataset file type '.txt'"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    template = "sentiment-zh" if "maybe" in content else None
    with pytest.raises(TrainError, match=None) as info:
        train(
            base_model="smollm2-135m-instruct",
            output=str(tmp_path / "out"),
            datasets=[{"path": str(path), **({"template": template} if template else {})}],
            eval={"split": 0},
        )
    assert message in str(info.value)


def test_bad_config_names_the_field(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("base_model: x\noutput: y\ndatasets: [{path: a.jsonl}]\ntraining: {epochs: -1}\n")
    with pytest.raises(TrainError, match=r"train.yaml: training.epochs: Input should be greater than 0"):
        train(path)
    path.write_text(
        "base_model: x\noutput: y\ndatasets: [{path: a.jsonl}]\naugment: {ops: [{type: shout}]}\n"
    )
    with pytest.raises(
        TrainError, match=r"augment.ops\[0\].type: unknown augmenter 'shout' \(known: char_noise,"
    ):
        train(path)


def test_template_paraphrases_round_robin_and_seeded():
    template = components().templates.get("sentiment-zh")
    rr = ExampleBuilder("task", template, [0, 2, 4], "round-robin", [], seed=0)
    assert [rr.build(i, "r", TWO_REVIEWS[0]).paraphrase for i in range(6)] == [0, 2, 4, 0, 2, 4]
    seeded = ExampleBuilder("task", template, None, "random", [], seed=3)
    picks = [seeded.build(i, "r", TWO_REVIEWS[0]).paraphrase for i in range(30)]
    assert picks == [seeded.build(i, "r", TWO_REVIEWS[0]).paraphrase for i in range(30)]
    assert len(set(picks)) > 2


def test_augmentation_is_deterministic_and_never_touches_targets():
    comps = components()
    augmenters = [
        SynonymReplacement(SynonymOptions(rate=0.3), comps),
        RandomSwap(RateOptions(rate=0.2)),
        RandomDeletion(RateOptions(rate=0.1)),
    ]
    template = comps.templates.get("sentiment-zh")
    builder = ExampleBuilder("task", template, None, "round-robin", augmenters, seed=7)
    copies = [builder.build(0, "r", TWO_REVIEWS[0], copy=c) for c in range(4)]
    again = [builder.build(0, "r", TWO_REVIEWS[0], copy=c) for c in range(4)]
    assert copies == again
    assert copies[0].prompt[-1]["content"].endswith(TWO_REVIEWS[0]["text"])  # copy 0 untouched
    assert len({c.prompt[-1]["content"] for c in copies}) > 1
    assert {c.completion for c in copies} == {"正面"}


def test_protected_tokens_survive_augmentation():
    swap = RandomSwap(RateOptions(rate=1.0))
    text = "call get_value() with {name} at 3.14 on https://x.org/a then user_id"
    for seed in range(20):
        words = swap.augment(text, random.Random(seed)).split()
        for token in ("get_value()", "{name}", "3.14", "https://x.org/a", "user_id"):
            assert token in words


def test_two_reviews_train_and_the_loss_falls(tiny_causal_dir, tmp_path):
    result = train(
        base_model=str(tiny_causal_dir),
        output=str(tmp_path / "model"),
        datasets=[{"records": TWO_REVIEWS, "template": "sentiment-zh"}],
        eval={"split": 0},
        training={**FAST, "epochs": 8},
        progress=False,
    )
    history = json.loads((tmp_path / "model" / "log_history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0]
    assert (tmp_path / "model" / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((tmp_path / "model" / "ift_model.json").read_text())
    assert manifest["tasks"] == ["sentiment"] and manifest["templates"] == ["sentiment-zh"]
    assert result.metrics["train_examples"] == 2
    # The merged model folder is a normal model a workflow can use by path.
    wf = Workflow.from_dict(
        {
            "name": "s",
            "inputs": {"text": {}},
            "model": str(result.output),
            "nodes": [{"id": "s", "template": "sentiment-zh", "inputs": {"text": "$input.text"}}],
        }
    )
    assert wf.run(text="很好")["s"] in ("正面", "负面")
    assert (result.output / "chat_template.jinja").exists() or "chat_template" in json.loads(
        (result.output / "tokenizer_config.json").read_text()
    )


def test_eval_metrics(tiny_causal_dir, tmp_path):
    records = TWO_REVIEWS * 6
    first = train(
        base_model=str(tiny_causal_dir),
        output=str(tmp_path / "m"),
        datasets=[{"records": records, "template": "sentiment-zh"}],
        eval={"split": 4},
        training={**FAST, "epochs": 1},
        progress=False,
    )
    assert {"eval_loss", "eval_token_accuracy", "sentiment_accuracy"} <= set(first.metrics)
    assert first.metrics["eval_examples"] == 4 and first.metrics["steps"] == 4


def test_cli_train(tiny_causal_dir, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in TWO_REVIEWS))
    config = tmp_path / "train.yaml"
    config.write_text(
        json.dumps(
            {
                "base_model": str(tiny_causal_dir),
                "output": str(tmp_path / "out"),
                "datasets": [{"path": str(data), "template": "sentiment-zh"}],
                "eval": {"split": 0},
                "training": FAST,
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "ift_engine.cli", "train", str(config)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "model written to" in done.stdout and (tmp_path / "out" / "model.safetensors").exists()


def test_top_layers_adapts_only_the_last_layers(tiny_causal_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    lora = {**FAST["lora"], "top_layers": 1}
    config = dict(
        base_model=str(tiny_causal_dir),
        output=str(tmp_path / "model"),
        datasets=[{"records": TWO_REVIEWS, "template": "sentiment-zh"}],
        eval={"split": 0},
        training={**FAST, "lora": lora},
        progress=False,
    )
    result = train(**config)
    base = AutoModelForCausalLM.from_pretrained(tiny_causal_dir).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(result.output).state_dict()
    changed = {k.split(".")[2] for k in base if "layers." in k and not (base[k] == tuned[k]).all()}
    assert changed == {"1"}  # of the tiny model's 2 layers, only the last one was adapted

    with pytest.raises(TrainError, match="top_layers: 3 is more than the model's 2 layers"):
        train(
            **{
                **config,
                "output": str(tmp_path / "bad"),
                "training": {**FAST, "lora": {**lora, "top_layers": 3}},
            }
        )


# -- the formats people bring, label by label ------------------------------------------------------


def features_of(tokenizer, record, **builder):
    from ift_engine.training.data import ExampleBuilder
    from ift_engine.training.tokenize import tokenize_example

    example = ExampleBuilder(builder.get("fmt"), None, None, "round-robin", [], 0).build(0, "r", record)
    return example, tokenize_example(tokenizer, example, max_length=512)


def trained_span(features):
    return [t for t, label in zip(features["input_ids"], features["labels"]) if label != IGNORE]


CHAT_FORMS = {
    "messages": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ]
    },
    "trl conversational": {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        "completion": [{"role": "assistant", "content": "4"}],
    },
    "sharegpt": {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "2+2?"},
            {"from": "gpt", "value": "4"},
        ]
    },
}


@pytest.mark.parametrize("form", sorted(CHAT_FORMS))
def test_chat_forms_train_exactly_the_answer_and_end_of_turn(tiny_causal_dir, form):
    from ift_engine.models.chat import chat_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_dir)
    example, features = features_of(tokenizer, CHAT_FORMS[form])
    assert [m["role"] for m in example.prompt] == ["system", "user"] and example.completion == "4"
    prompt = chat_ids(tokenizer, example.prompt)
    answer = tokenizer("4", add_special_tokens=False)["input_ids"] + [
        tokenizer.convert_tokens_to_ids("<|im_end|>")
    ]
    assert features["input_ids"] == prompt + answer  # token by token
    assert features["labels"] == [IGNORE] * len(prompt) + answer


def test_plain_text_trains_every_token(tiny_causal_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_dir)
    example, features = features_of(tokenizer, {"text": "Bees dance to tell where flowers are."})
    ids = tokenizer("Bees dance to tell where flowers are.", add_special_tokens=False)["input_ids"]
    assert example.language_model and features["input_ids"] == ids + [tokenizer.eos_token_id]
    assert features["labels"] == features["input_ids"]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"prompt": [{"role": "user", "content": "x"}], "completion": [{"role": "user", "content": "y"}]},
            "field 'completion' must be one assistant message",
        ),
        (
            {"prompt": "x", "completion": [{"role": "assistant"}]},
            "field 'completion' must be a list of {role, content} messages",
        ),
        (
            {"conversations": [{"from": "alien", "value": "x"}, {"from": "gpt", "value": "y"}]},
            "field 'conversations' must be a list of {from, value} turns",
        ),
        (
            {"conversations": [{"from": "human", "value": "x"}, {"from": "human", "value": "y"}]},
            "must end with the assistant's answer",
        ),
        ({"text": ""}, "field 'text' must be a non-empty string"),
    ],
)
def test_bad_records_of_the_new_forms(tiny_causal_dir, record, message):
    from ift_engine.records import DataError

    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_dir)
    with pytest.raises(DataError, match=re.escape(message)):
        features_of(tokenizer, record)


def test_a_run_mixes_every_format(tiny_causal_dir, tmp_path):
    records = [CHAT_FORMS[form] for form in sorted(CHAT_FORMS)] + [
        {"text": "Bees dance to tell where flowers are."},
        {"instruction": "Add", "input": "1+1", "output": "2"},
        {"prompt": "Hi", "completion": "Hello"},
    ]
    result = train(
        base_model=str(tiny_causal_dir),
        output=str(tmp_path / "model"),
        datasets=[{"records": records * 2}],
        eval={"split": 4},
        training={**FAST, "epochs": 1},
        progress=False,
    )
    assert result.metrics["train_examples"] == 8 and result.metrics["eval_loss"] > 0


def test_trainer_arguments_pass_through_checked_when_the_spec_loads(tiny_causal_dir, tmp_path):
    base = dict(
        base_model=str(tiny_causal_dir),
        datasets=[{"records": TWO_REVIEWS * 2, "template": "sentiment-zh"}],
        eval={"split": 0},
    )
    for args, message in (
        (
            {"lr_schedular_type": "cosine"},
            "'lr_schedular_type' is not a TrainingArguments field; did you mean 'lr_scheduler_type'?",
        ),
        ({"output_dir": "elsewhere"}, "'output_dir' is set by the engine"),
    ):
        with pytest.raises(TrainError, match=re.escape(message)):
            train(**base, output=str(tmp_path / "x"), training={**FAST, "args": args}, progress=False)
    with pytest.raises(TrainError, match="training.args: "):
        train(
            **base,
            output=str(tmp_path / "y"),
            training={**FAST, "args": {"lr_scheduler_type": "bogus"}},
            progress=False,
        )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not list(tmp_path.glob(".*"))
    args = {"max_steps": 3, "lr_scheduler_type": "constant", "warmup_steps": 0}
    result = train(
        **base, output=str(tmp_path / "z"), training={**FAST, "epochs": 5, "args": args}, progress=False
    )
    assert result.metrics["steps"] == 3  # max_steps wins over the engine's epochs
    history = json.loads((tmp_path / "z" / "log_history.json").read_text())
    rates = {h["learning_rate"] for h in history if "learning_rate" in h}
    assert rates == {FAST["learning_rate"]}  # constant schedule, as asked


def test_dry_run_checks_everything_and_trains_nothing(tiny_causal_dir, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(
        json.dumps(
            {
                "base_model": str(tiny_causal_dir),
                "output": str(tmp_path / "model"),
                "datasets": [{"records": TWO_REVIEWS * 3, "template": "sentiment-zh"}],
                "eval": {"split": 2},
                "training": {**FAST, "epochs": 3, "max_length": 64},
            }
        )
    )
    from ift_engine.training.dry_run import dry_run
    from ift_engine.training.trainer import build_spec

    report = dry_run(build_spec(config))
    assert report.train_examples == 4 and report.eval_examples == 2
    assert report.datasets == [{"dataset": "datasets[0].records", "records": 6, "formats": {"task": 6}}]
    assert report.steps_per_epoch == 2 and report.total_steps == 6 and report.seconds_per_step > 0
    assert report.example.endswith("<|im_start|>assistant\n⟦正面<|im_end|>⟧") or report.example.endswith(
        "⟦负面<|im_end|>⟧"
    )
    assert (
        report.truncated == 4 and report.lengths["max"] > 64
    )  # the reviews' prompts are longer than 64 tokens
    done = subprocess.run(
        [sys.executable, "-m", "ift_engine.cli", "train", str(config), "--dry-run"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "4 to train, 2 held out" in done.stdout and "6 in all" in done.stdout
    assert not (tmp_path / "model").exists() and not list(tmp_path.glob(".*"))
    checked = subprocess.run(
        [sys.executable, "-m", "ift_engine.cli", "validate", str(config)], capture_output=True, text=True
    )
    assert checked.returncode == 0 and "training file: 4 examples to train, 2 held out" in checked.stdout


# -- Hugging Face datasets as a source -------------------------------------------------------------


def hf_spec(**options):
    return TrainSpec(
        base_model="x", output="y", eval={"split": 0}, datasets=[{"source": "hf", "options": options}]
    )


def test_hf_source_reads_local_files_and_saved_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"instruction": f"Say {i}", "output": str(i)} for i in range(4)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.csv").write_text("instruction,output\n" + "".join(f"Say {i},{i}\n" for i in range(4)))
    table = datasets.Dataset.from_list(rows)
    table.to_parquet(str(tmp_path / "d.parquet"))
    table.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": table, "test": table.select([0])}).save_to_disk(
        str(tmp_path / "saved-dict")
    )
    for options in (
        {"path": "json", "data_files": str(tmp_path / "d.jsonl")},
        {"path": "csv", "data_files": str(tmp_path / "d.csv")},
        {"path": "parquet", "data_files": {"train": str(tmp_path / "d.parquet")}},
        {"path": str(tmp_path / "saved")},
        {"path": str(tmp_path / "saved-dict")},
    ):
        examples, _ = collect_examples(hf_spec(**options), components())
        assert sorted(e.completion for e in examples) == ["0", "1", "2", "3"], options
    examples, _ = collect_examples(hf_spec(path=str(tmp_path / "saved-dict"), split="test"), components())
    assert [e.completion for e in examples] == ["0"]


def test_hf_source_errors_are_one_line_and_fast_offline(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    from ift_engine.models import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    started = time.perf_counter()
    with pytest.raises(IftError, match="needs the Hugging Face hub, which cannot be reached"):
        collect_examples(hf_spec(path="someone/reviews"), components())
    assert time.perf_counter() - started < 5  # no retries against an unreachable hub
    with pytest.raises(IftError, match="dataset 'json': "):
        collect_examples(hf_spec(path="json", data_files=str(tmp_path / "missing.jsonl")), components())
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"text": "a"}])}).save_to_disk(
        str(tmp_path / "dd")
    )
    with pytest.raises(IftError, match="has no split 'validation' \\(splits: train\\)"):
        collect_examples(hf_spec(path=str(tmp_path / "dd"), split="validation"), components())
    with pytest.raises(TrainError, match="datasets\\[0\\].options: splt: unknown field"):
        collect_examples(hf_spec(path="json", splt="x"), components())
