"""``train``: records + templates + augmenters -> a fine-tuned model folder, with metrics.

Built on transformers ``Trainer`` and peft LoRA, so the same code runs under ``torchrun`` or
``accelerate launch`` on several GPUs or machines, resumes from checkpoints, and shows progress.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..documents import load_yaml_file
from ..errors import IftError, TrainError
from ..models.resolve import MANIFEST, ModelPool, ModelSpec
from ..models.torch_thread import run_on_torch_thread
from ..plugins import Components, components
from ..validation import validate_document
from .data import DataError, Example, ExampleBuilder, read_records
from .output import RunFolder
from .spec import DatasetSpec, LoraSpec, TrainSpec


@dataclass
class TrainResult:
    output: Path
    metrics: dict[str, Any]


def load_train_spec(path: str | Path) -> TrainSpec:
    path = Path(path)
    data = load_yaml_file(path, "training file", TrainError)
    return validate_document(TrainSpec, data, str(path), TrainError)


def _records(dataset: DatasetSpec, index: int, comps: Components) -> list[tuple[str, Any]]:
    where = f"datasets[{index}]"
    if dataset.path is not None:
        items = list(read_records(Path(dataset.path)))
    elif dataset.source is not None:
        try:
            source = comps.datasets.get(dataset.source)
        except IftError as exc:
            raise TrainError(f"{where}.source: {exc}") from None
        options = validate_document(source.options_model, dataset.options, f"{where}.options", TrainError)
        items = [(f"{dataset.source}[{i}]", r) for i, r in enumerate(source.records(options))]
    else:
        items = [(f"{where}.records[{i}]", r) for i, r in enumerate(dataset.records or [])]
    if dataset.columns:
        items = [
            (
                w,
                {
                    **r,
                    **{field: r[column] for field, column in dataset.columns.items() if column in r},
                },
            )
            if isinstance(r, dict)
            else (w, r)
            for w, r in items
        ]
    return items


def collect_examples(spec: TrainSpec, comps: Components) -> tuple[list[Example], list[Example]]:
    """(train, eval) examples. The eval split is taken from the original records before
    augmentation, so no augmented copy of an eval record is trained on."""
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
        builder = ExampleBuilder(
            dataset.format,
            template,
            dataset.paraphrases,
            spec.template_policy,
            augmenters,
            spec.seed,
        )
        records = _records(dataset, index, comps)
        random.Random(spec.seed).shuffle(records)
        records = records[: dataset.limit] if dataset.limit else records
        base.extend((builder, i, where, record) for i, (where, record) in enumerate(records))
    random.Random(spec.seed + 1).shuffle(base)
    split = spec.eval.split
    n_eval = round(split * len(base)) if split < 1 else min(int(split), len(base) - 1)
    held, kept = base[:n_eval], base[n_eval:]
    eval_examples = [b.build(i, w, r) for b, i, w, r in held]
    train_examples = [
        b.build(i, w, r, copy) for copy in range(spec.augment.copies + 1) for b, i, w, r in kept
    ]
    if not train_examples:
        raise TrainError("no training examples: add records or lower eval.split")
    return train_examples, eval_examples


def fingerprint(examples: list[Example]) -> str:
    payload = json.dumps([[list(e.prompt), e.completion] for e in examples], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def plot_losses(history: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def top_layer_indices(model: Any, top: int | None) -> list[int] | None:
    """Indices of the last ``top`` decoder layers (None: all layers)."""
    if top is None:
        return None
    total = model.config.num_hidden_layers
    if top > total:
        raise TrainError(f"training.lora.top_layers: {top} is more than the model's {total} layers")
    return list(range(total - top, total))


def check_lora_targets(model: Any, targets: list[str]) -> None:
    """Each LoRA target must name linear layers of the model (peft matches name suffixes)."""
    import torch

    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    missing = [
        t for t in targets if t != "all-linear" and not any(n == t or n.endswith(f".{t}") for n in names)
    ]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise TrainError(
            f"training.lora.targets: '{missing[0]}' names no linear layer of {type(model).__name__} "
            f"(its linear layers: {', '.join(linear)})"
        )


def with_lora(model: Any, lora: LoraSpec) -> Any:
    """The model wrapped for LoRA training as ``lora`` says."""
    from peft import LoraConfig, get_peft_model

    check_lora_targets(model, lora.targets)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.targets,
        layers_to_transform=top_layer_indices(model, lora.top_layers),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def train(
    config: TrainSpec | Mapping[str, Any] | str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **fields: Any,
) -> TrainResult:
    """Fine-tune a model. ``config`` is a ``TrainSpec``, a mapping, or a YAML file path; keyword
    fields build or override it (``train(base_model=..., output=..., datasets=[{"records":
    [...], "template": "sentiment-zh"}])``). ``resume`` continues an interrupted run of the
    same spec; ``overwrite`` replaces a previous trained model in ``output`` (see
    ``training.output``)."""
    if isinstance(config, (str, Path)):
        spec = load_train_spec(config)
    else:
        data = config.model_dump() if isinstance(config, TrainSpec) else dict(config or {})
        spec = validate_document(TrainSpec, {**data, **fields}, "<train>", TrainError)
    if isinstance(config, (str, Path)) and fields:
        spec = validate_document(TrainSpec, {**spec.model_dump(), **fields}, str(config), TrainError)
    folder = RunFolder(spec, resume=resume, overwrite=overwrite)
    folder.check()
    try:
        return run_on_torch_thread(_run, spec, folder, progress)
    except DataError as exc:
        folder.abandon()
        raise TrainError(str(exc)) from None
    except BaseException:
        folder.abandon()
        raise


def _run(spec: TrainSpec, folder: RunFolder, progress: bool) -> TrainResult:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from ..models.hf_causal import HFCausalLM, end_of_turn_ids, generation_eos
    from ..models.torch_utils import pick_device
    from .metrics import task_metrics, token_accuracy
    from .tokenize import tokenize_example

    started = time.perf_counter()
    comps = components()
    train_examples, eval_examples = collect_examples(spec, comps)  # cheap checks first
    base_folder = ModelPool(comps).locate(ModelSpec(name=spec.base_model))
    out = folder.work

    device = pick_device(spec.training.device)
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    model: Any = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    stop_ids = end_of_turn_ids(tokenizer, generation_eos(model))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(stop_ids[0])
    settings = spec.training
    features = [tokenize_example(tokenizer, e, settings.max_length, stop_ids) for e in train_examples]
    eval_features = [tokenize_example(tokenizer, e, settings.max_length, stop_ids) for e in eval_examples]

    if settings.lora is not None:
        model = with_lora(model, settings.lora)
    folder.start(fingerprint(train_examples))
    evaluating = bool(eval_features)
    args = TrainingArguments(
        output_dir=str(folder.checkpoints),
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        warmup_ratio=settings.warmup_ratio,
        weight_decay=settings.weight_decay,
        logging_steps=settings.logging_steps,
        eval_strategy=("steps" if settings.eval_steps else "epoch") if evaluating else "no",
        eval_steps=settings.eval_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=1,
        group_by_length=settings.group_by_length,
        seed=spec.seed,
        data_seed=spec.seed,
        use_cpu=device.type == "cpu",
        report_to=[],
        remove_unused_columns=False,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )

    def compute_metrics(prediction: Any) -> dict[str, float]:
        return {"token_accuracy": token_accuracy(prediction.predictions, prediction.label_ids)}

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=features,
        eval_dataset=eval_features or None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        compute_metrics=compute_metrics if evaluating else None,
        preprocess_logits_for_metrics=lambda logits, labels: logits.argmax(-1),
    )
    # A run killed before its first complete checkpoint starts again from step 0.
    checkpoint = folder.last_checkpoint() if folder.resume else None
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    final_eval = trainer.evaluate() if evaluating else {}
    if not trainer.is_world_process_zero():
        return TrainResult(folder.out, {})

    if settings.lora is not None:
        if settings.keep_adapter:
            model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

    metrics: dict[str, Any] = {
        "train_loss": train_output.training_loss,
        "train_examples": len(train_examples),
        "eval_examples": len(eval_examples),
        "steps": trainer.state.global_step,
    }
    if evaluating:
        metrics["eval_loss"] = final_eval["eval_loss"]
        metrics["eval_token_accuracy"] = final_eval["eval_token_accuracy"]
        tuned = HFCausalLM(str(folder.out), model, tokenizer, batch_size=settings.batch_size)
        metrics.update(task_metrics(tuned, eval_examples, spec.eval.max_generate))
    metrics["seconds"] = time.perf_counter() - started
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_losses(
        trainer.state.log_history,
        out / "loss_curve.png",
        f"{Path(spec.output).name}: {spec.base_model}",
    )
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
    templates = sorted({d.template for d in spec.datasets if d.template})
    (out / MANIFEST).write_text(
        json.dumps(
            {
                "backend": "hf-causal",
                "base_model": spec.base_model,
                "tasks": sorted({e.task for e in train_examples if e.task}),
                "templates": templates,
                "data_fingerprint": fingerprint(train_examples),
                "training": spec.model_dump(mode="json", exclude={"datasets"}),
                "metrics": metrics,
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    folder.finish()
    return TrainResult(folder.out, metrics)
