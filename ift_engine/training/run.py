"""One training run, in four steps: load the model (with LoRA), build the Trainer's arguments
(the engine's settings, then the user's ``training.args``), fit, and write the model folder with
its metrics, loss curve and manifest. Called on the torch thread by ``train``.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TrainError, first_line
from ..files import files_fingerprint, read_json_mapping
from ..models.adapters import shape_of
from ..models.resolve import ModelPool, ModelSpec
from ..plugins import Components
from .data import Example
from .output import RunFolder
from .spec import LoraSpec, TrainSpec
from .tokenize import IGNORE


@dataclass
class TrainResult:
    output: Path
    metrics: dict[str, Any]


@dataclass
class Fitted:
    """What ``fit`` leaves for ``write_outputs``."""

    trainer: Any
    training_loss: float
    final_eval: dict[str, float]


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
    with warnings.catch_warnings():
        # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing`: not the user's to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        return get_peft_model(model, config)


def load_model(spec: TrainSpec, base_folder: str) -> tuple[Any, Any, list[int]]:
    """(model, with LoRA as the spec says; tokenizer; end-of-turn ids)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..models.hf_causal import end_of_turn_ids, generation_eos

    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    model: Any = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    stop_ids = end_of_turn_ids(tokenizer, generation_eos(model))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(stop_ids[0])
    if spec.training.lora is not None:
        model = with_lora(model, spec.training.lora)
    return model, tokenizer, stop_ids


def training_arguments(spec: TrainSpec, folder: RunFolder, evaluating: bool, progress: bool) -> Any:
    """The Trainer's arguments: the engine's settings, then ``training.args`` over them."""
    from transformers import TrainingArguments

    from ..models.torch_utils import pick_device

    settings = spec.training
    engine = dict(
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=settings.weight_decay,
        logging_steps=settings.logging_steps,
        eval_strategy=("steps" if settings.eval_steps else "epoch") if evaluating else "no",
        eval_steps=settings.eval_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=1,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        seed=spec.seed,
        data_seed=spec.seed,
        use_cpu=pick_device(settings.device).type == "cpu",
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    try:
        return TrainingArguments(output_dir=str(folder.checkpoints), **{**engine, **settings.args})
    except (ValueError, TypeError, ImportError) as exc:
        first = first_line(exc)
        raise TrainError(f"training.args: {first}") from None


def fit(
    spec: TrainSpec,
    folder: RunFolder,
    model: Any,
    tokenizer: Any,
    data: tuple[list[Any], list[Any]],
    progress: bool,
) -> Fitted:
    """Train (continuing the newest complete checkpoint on resume) and evaluate."""
    from transformers import DataCollatorForSeq2Seq, Trainer

    from .metrics import token_accuracy

    features, eval_features = data
    evaluating = bool(eval_features)

    def compute_metrics(prediction: Any) -> dict[str, float]:
        return {"token_accuracy": token_accuracy(prediction.predictions, prediction.label_ids)}

    trainer = Trainer(
        model=model,
        args=training_arguments(spec, folder, evaluating, progress),
        train_dataset=features,
        eval_dataset=eval_features or None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE),
        compute_metrics=compute_metrics if evaluating else None,
        preprocess_logits_for_metrics=lambda logits, labels: logits.argmax(-1),
    )
    # A run killed before its first complete checkpoint starts again from step 0.
    checkpoint = folder.last_checkpoint() if folder.resume else None
    output = trainer.train(resume_from_checkpoint=checkpoint)
    return Fitted(trainer, output.training_loss, trainer.evaluate() if evaluating else {})


@dataclass
class Tuned:
    """The trained model and its tokenizer, the base model's folder and when the run started."""

    model: Any
    tokenizer: Any
    base_folder: str
    started: float


def write_outputs(
    spec: TrainSpec,
    folder: RunFolder,
    tuned: Tuned,
    fitted: Fitted,
    examples: tuple[list[Example], list[Example]],
    comps: Components,
) -> TrainResult:
    """The model folder (merged, or the adapter alone), metrics, loss curve, log and manifest,
    renamed into place."""
    model = save_model(spec, folder.work, tuned.model, tuned.tokenizer)
    metrics, paraphrase_eval = measure(spec, folder, (model, tuned.tokenizer), fitted, examples, comps)
    metrics["seconds"] = time.perf_counter() - tuned.started
    out, history = folder.work, fitted.trainer.state.log_history
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_losses(history, out / "loss_curve.png", f"{Path(spec.output).name}: {spec.base_model}")
    (out / "log_history.json").write_text(json.dumps(history, indent=2))
    folder.write_manifest(model_manifest(spec, examples[0], metrics, paraphrase_eval, tuned.base_folder))
    folder.finish()
    return TrainResult(folder.out, metrics)


def keeps_adapter(spec: TrainSpec) -> bool:
    """Whether the output is the LoRA adapter alone (``lora.merge: false``)."""
    return spec.training.lora is not None and not spec.training.lora.merge


def save_model(spec: TrainSpec, out: Path, model: Any, tokenizer: Any) -> Any:
    """Save the tuned model into ``out``: merged into the base (and the adapter beside it with
    ``keep_adapter``), or the adapter alone. Returns the model to evaluate."""
    settings = spec.training
    if settings.lora is not None and not keeps_adapter(spec):
        if settings.keep_adapter:
            model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.eval()
    model.save_pretrained(out)  # with the adapter kept: a peft adapter folder
    tokenizer.save_pretrained(out)
    return model


def measure(
    spec: TrainSpec,
    folder: RunFolder,
    tuned: tuple[Any, Any],
    fitted: Fitted,
    examples: tuple[list[Example], list[Example]],
    comps: Components,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The run's metrics (losses, and the task's on the held-out examples) and, with
    ``eval.paraphrases``, the evaluation across paraphrases."""
    from ..models.hf_causal import HFCausalLM
    from .metrics import task_metrics

    model, tokenizer = tuned
    train_examples, eval_examples = examples
    metrics: dict[str, Any] = {
        "train_loss": fitted.training_loss,
        "train_examples": len(train_examples),
        "eval_examples": len(eval_examples),
        "steps": fitted.trainer.state.global_step,
    }
    batch_size = spec.training.batch_size
    if fitted.final_eval:
        metrics["eval_loss"] = fitted.final_eval["eval_loss"]
        metrics["eval_token_accuracy"] = fitted.final_eval["eval_token_accuracy"]
        as_model = HFCausalLM(str(folder.out), model, tokenizer, batch_size=batch_size)
        metrics.update(task_metrics(as_model, eval_examples, spec.eval.max_generate))
    if spec.eval.paraphrases is None:
        return metrics, None
    from ..evaluation.after_training import evaluate_trained

    as_model = HFCausalLM(str(folder.out), model, tokenizer, batch_size=batch_size)
    return metrics, evaluate_trained(spec, as_model, examples, folder.work, comps)


def model_manifest(
    spec: TrainSpec,
    train_examples: list[Example],
    metrics: dict[str, Any],
    paraphrase_eval: dict[str, Any] | None,
    base_folder: str,
) -> dict[str, Any]:
    """What ``ift_model.json`` says of a trained model."""
    from .examples import fingerprint

    manifest = {
        "backend": "hf-causal",
        "base_model": spec.base_model,
        "tasks": sorted({e.task for e in train_examples if e.task}),
        "templates": sorted({d.template for d in spec.datasets if d.template}),
        "trained_paraphrases": trained_paraphrases(train_examples),
        "data_fingerprint": fingerprint(train_examples),
        "training": spec.model_dump(mode="json", exclude={"datasets"}),
        "metrics": metrics,
    }
    if paraphrase_eval is not None:
        manifest["eval"] = paraphrase_eval
    if keeps_adapter(spec):
        manifest["adapter"] = adapter_record(spec.base_model, base_folder)
    return manifest


def trained_paraphrases(examples: list[Example]) -> list[dict[str, Any]]:
    """Each (template, paraphrase) trained on, with its text: how ``ift eval`` tells the
    instructions a model has seen from held-out ones."""
    seen = {(e.template, e.paraphrase, e.instruction) for e in examples if e.template is not None}
    return [
        {"template": template, "paraphrase": index, "text": text}
        for template, index, text in sorted(seen, key=lambda s: (str(s[0]), s[1] or 0))
    ]


def adapter_record(base_model: str, base_folder: str) -> dict[str, Any]:
    """What a kept adapter's manifest says of its base: how to name it (an alias or hub id as
    given, a folder as an absolute path), its shape and its files' fingerprint, which the
    engine checks before applying the adapter."""
    folder = Path(base_folder)
    local = Path(base_model).expanduser()
    record: dict[str, Any] = {"base": str(local.resolve()) if local.exists() else base_model}
    if folder.is_dir():
        record["base_shape"] = shape_of(read_json_mapping(folder / "config.json") or {})
        record["base_fingerprint"] = files_fingerprint(folder)
    return record


def run_training(spec: TrainSpec, folder: RunFolder, progress: bool, comps: Components) -> TrainResult:
    from .examples import collect_examples, fingerprint
    from .tokenize import tokenize_example

    started = time.perf_counter()
    train_examples, eval_examples = collect_examples(spec, comps)  # cheap checks first
    base_folder = ModelPool(comps).locate(ModelSpec(name=spec.base_model))
    model, tokenizer, stop_ids = load_model(spec, base_folder)
    length = spec.training.max_length
    features = [tokenize_example(tokenizer, e, length, stop_ids) for e in train_examples]
    eval_features = [tokenize_example(tokenizer, e, length, stop_ids) for e in eval_examples]
    folder.start(fingerprint(train_examples))
    fitted = fit(spec, folder, model, tokenizer, (features, eval_features), progress)
    try:
        if not fitted.trainer.is_world_process_zero():
            return TrainResult(folder.out, {})
        examples = (train_examples, eval_examples)
        tuned = Tuned(model, tokenizer, base_folder, started)
        return write_outputs(spec, folder, tuned, fitted, examples, comps)
    finally:
        leave_process_group()


def leave_process_group() -> None:
    """Under torchrun: wait until rank 0 has written the model, then close the process group.
    Left open, its threads meet the interpreter's exit and a rank can abort ("terminate called
    without an active exception"), failing the launch after the work succeeded."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
