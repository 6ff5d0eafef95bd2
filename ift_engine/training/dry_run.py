"""``ift train SPEC --dry-run``: load and check everything a run needs, train nothing.

It reads every dataset and builds the examples (so a bad record fails here), tokenizes them with
the base model's tokenizer (lengths, and how many the ``max_length`` cuts), shows one example as
the model will see it with the trained span marked, and times a few forward and backward passes
on a real batch to estimate the run: minutes before an hour is spent.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..models.resolve import ModelPool, ModelSpec
from ..plugins import Components, installed_components
from .data import detect_format
from .spec import TrainSpec
from .tokenize import IGNORE, tokenize_example

TIMED_STEPS = 2


@dataclass
class DryRun:
    """What a run would do."""

    datasets: list[dict[str, Any]] = field(default_factory=list)
    train_examples: int = 0
    eval_examples: int = 0
    paraphrases: dict[int, int] = field(default_factory=dict)
    lengths: dict[str, float] = field(default_factory=dict)
    truncated: int = 0
    example: str = ""
    steps_per_epoch: int = 0
    total_steps: int = 0
    seconds_per_step: float = 0.0

    @property
    def eta_seconds(self) -> float:
        return self.total_steps * self.seconds_per_step


def describe_datasets(spec: TrainSpec, comps: Components) -> list[dict[str, Any]]:
    """Records and formats of each dataset, as written."""
    from ..records import dataset_records

    rows = []
    for index, dataset in enumerate(spec.datasets):
        records = dataset_records(dataset, f"datasets[{index}]", comps)
        formats = Counter(
            dataset.format or detect_format(r) if isinstance(r, dict) else "not a record" for _, r in records
        )
        origin = dataset.path or dataset.source or f"datasets[{index}].records"
        rows.append({"dataset": origin, "records": len(records), "formats": dict(formats)})
    return rows


def marked_text(tokenizer: Any, features: dict[str, list[int]]) -> str:
    """The example's text with the trained tokens between ⟦ and ⟧."""
    ids, labels = features["input_ids"], features["labels"]
    first = next((i for i, label in enumerate(labels) if label != IGNORE), len(ids))
    return tokenizer.decode(ids[:first]) + "⟦" + tokenizer.decode(ids[first:]) + "⟧"


def seconds_per_step(spec: TrainSpec, base_folder: str, batch: list[dict[str, list[int]]]) -> float:
    """Median time of a forward and backward pass over one real batch (after a warm-up)."""
    import torch
    from transformers import DataCollatorForSeq2Seq

    from .run import load_model

    model, tokenizer, _ = load_model(spec, base_folder)
    model.train()
    inputs = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE)(batch)
    times = []
    for _ in range(TIMED_STEPS + 1):
        started = time.perf_counter()
        loss = model(**{k: torch.as_tensor(v) for k, v in inputs.items()}).loss
        loss.backward()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) * spec.training.gradient_accumulation


def dry_run(spec: TrainSpec, time_steps: bool = True, components: Components | None = None) -> DryRun:
    """What training ``spec`` would do: its data, examples, token lengths and (``time_steps``)
    the seconds a step takes, measured on a few; nothing is written."""
    from transformers import AutoTokenizer

    from ..models.hf_causal import end_of_turn_ids
    from .examples import collect_examples

    comps = components or installed_components()
    report = DryRun(datasets=describe_datasets(spec, comps))
    train, held = collect_examples(spec, comps)
    report.train_examples, report.eval_examples = len(train), len(held)
    report.paraphrases = dict(
        sorted(Counter(e.paraphrase for e in train if e.paraphrase is not None).items())
    )
    base_folder = ModelPool(comps).locate(ModelSpec(name=spec.base_model))
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    stops = end_of_turn_ids(tokenizer, None)
    settings = spec.training
    # Lengths need every example untruncated; the marked example and the timed batch, only the first few.
    full = [len(tokenize_example(tokenizer, e, 10**9, stops)["input_ids"]) for e in train]
    features = [
        tokenize_example(tokenizer, e, settings.max_length, stops) for e in train[: settings.batch_size]
    ]
    report.lengths = {"min": min(full), "median": statistics.median(full), "max": max(full)}
    report.truncated = sum(length > settings.max_length for length in full)
    report.example = marked_text(tokenizer, features[0])
    per_step = settings.batch_size * settings.gradient_accumulation
    report.steps_per_epoch = math.ceil(len(train) / per_step)
    max_steps = int(settings.args.get("max_steps") or 0)  # training.args may cap the run
    report.total_steps = max_steps or math.ceil(report.steps_per_epoch * settings.epochs)
    if time_steps:
        report.seconds_per_step = seconds_per_step(spec, base_folder, features)
    return report
