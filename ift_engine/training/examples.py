"""Training examples from a training spec: the records of every dataset, built from their
templates and augmented, split into train and eval; and the fingerprint of a set of them."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from ..errors import IftError, TrainError
from ..paraphrases import paraphrase_set, read_held_out
from ..plugins import Components
from ..records import dataset_records, sample
from ..templates import InstructionTemplate
from ..validation import validate_document
from .data import Example, ExampleBuilder
from .spec import TrainSpec


def collect_examples(spec: TrainSpec, comps: Components) -> tuple[list[Example], list[Example]]:
    """(train, eval) examples. The eval split is taken from the original records before
    augmentation, so no augmented copy of an eval record is trained on."""
    comps = comps.with_templates(spec.templates, TrainError)
    base: list[tuple[ExampleBuilder, int, str, Any]] = []
    augmenters = []
    for i, op in enumerate(spec.augment.ops):
        name = op.get("type")
        try:
            cls = comps.augmenters.get(str(name))
        except IftError as exc:
            raise TrainError(f"augment.ops[{i}].type: {exc}") from None
        options = validate_document(
            cls.options_model,
            {k: v for k, v in op.items() if k != "type"},
            f"augment.ops[{i}] ({name})",
            TrainError,
        )
        augmenters.append(cls(options, comps))
    for index, dataset in enumerate(spec.datasets):
        template = None
        if dataset.template:
            try:
                template = comps.templates.get(dataset.template)
            except IftError as exc:
                raise TrainError(f"datasets[{index}].template: {exc}") from None
            try:
                for paraphrase in dataset.paraphrases or ():
                    template.pick(paraphrase)  # checked now, not when the record is built
            except IftError as exc:
                raise TrainError(f"datasets[{index}].paraphrases: {exc}") from None
            check_eval_paraphrases(spec, template)
        builder = ExampleBuilder(
            dataset.format,
            template,
            dataset.paraphrases,
            spec.template_policy,
            augmenters,
            spec.seed,
        )
        records = sample(dataset_records(dataset, f"datasets[{index}]", comps), spec.seed, dataset.limit)
        base.extend((builder, i, where, record) for i, (where, record) in enumerate(records))
    random.Random(spec.seed + 1).shuffle(base)
    split = spec.eval.split
    if split >= 1 and split >= len(base):
        raise TrainError(
            f"eval.split: {int(split)} records held out, but the data has {len(base)}; hold out fewer"
        )
    n_eval = round(split * len(base)) if split < 1 else int(split)
    held, kept = base[:n_eval], base[n_eval:]
    eval_examples = [b.build(i, w, r) for b, i, w, r in held]
    train_examples = [
        b.build(i, w, r, copy) for copy in range(spec.augment.copies + 1) for b, i, w, r in kept
    ]
    if not train_examples:
        raise TrainError("no training examples: add records or lower eval.split")
    return train_examples, eval_examples


def check_eval_paraphrases(spec: TrainSpec, template: InstructionTemplate) -> None:
    """``eval.paraphrases`` and ``eval.held_out`` checked against a dataset's template before
    training, not after it."""
    if spec.eval.paraphrases is None:
        return
    try:
        held_out = read_held_out(spec.eval.held_out, "eval.held_out")
        paraphrase_set(template, spec.eval.paraphrases, held_out, "eval.paraphrases")
    except IftError as exc:
        raise TrainError(str(exc)) from None


def fingerprint(examples: list[Example]) -> str:
    payload = json.dumps([[list(e.prompt), e.completion] for e in examples], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
