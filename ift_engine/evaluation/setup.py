"""From an evaluation file to an ``Evaluation``: the template and its paraphrases, the records,
and the models, each checked before anything slow happens (one-line ``EvalError``s naming the
field)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import EvalError, IftError
from ..models.base import GenerationSettings
from ..models.manifest import read_manifest
from ..models.resolve import EnsembleSpec, ModelPool, ModelSpec
from ..paraphrases import paraphrase_set, read_held_out
from ..plugins import Components, installed_components
from ..records import dataset_records, sample, task_values
from ..templates import AnswerForm, InstructionTemplate
from .asking import EvalModel, Item, Progress, evaluate
from .results import Evaluation
from .spec import (
    DEFAULT_MAX_NEW_TOKENS,
    EvaluationSpec,
    build_eval_spec,
    load_eval_spec,
    model_label,
)


def read_items(spec: EvaluationSpec, template: InstructionTemplate, comps: Components) -> list[Item]:
    records = sample(dataset_records(spec.data, "data", comps), spec.seed, spec.data.limit)
    if not records:
        raise EvalError("data: no records to evaluate")
    try:
        return [Item(*task_values(template, record, where)) for where, record in records]
    except IftError as exc:
        raise EvalError(f"data: {exc}") from None


def trained_texts(name: str, hops: int = 2) -> frozenset[str] | None:
    """The instruction texts the model in folder ``name`` was trained on, from the manifest
    ``ift train`` wrote (an export's manifest names the folder it was exported from)."""
    folder = Path(name).expanduser()
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    trained = manifest.get("trained_paraphrases")
    if isinstance(trained, list):
        return frozenset(t["text"] for t in trained if isinstance(t, dict) and isinstance(t.get("text"), str))
    source = manifest.get("source")
    return trained_texts(source, hops - 1) if isinstance(source, str) and hops > 1 else None


def _check_model(pool: ModelPool, ref: ModelSpec | EnsembleSpec, template: InstructionTemplate) -> None:
    if isinstance(ref, ModelSpec):
        pool.check(ref)
        return
    pool.check_ensemble(ref)
    combines_labels = pool.components.ensemblers.get(ref.ensemble).capability == "classify"
    if combines_labels != (template.answer is AnswerForm.LABEL):
        raise EvalError(
            f"ensemble '{ref.ensemble}' combines {'labels' if combines_labels else 'generated text'}, "
            f"but template '{template.name}' answers with {template.answer.value}"
        )


def load_models(
    pool: ModelPool, refs: Sequence[str | ModelSpec | EnsembleSpec], template: InstructionTemplate
) -> list[EvalModel]:
    """Each model checked (all before any loads), then loaded onto its worker."""
    specs = [ModelSpec(name=r) if isinstance(r, str) else r for r in refs]
    for index, ref in enumerate(specs):
        try:
            _check_model(pool, ref, template)
        except IftError as exc:
            raise EvalError(f"models[{index}]: {exc}") from None
    names = _distinct([model_label(r) for r in refs])
    models = []
    for index, (ref, name) in enumerate(zip(specs, names)):
        try:
            worker = pool.worker(ref)
            if template.answer is AnswerForm.LABEL:
                worker.model.check_labels(template.labels)
        except IftError as exc:
            raise EvalError(f"models[{index}] ({name}): {exc}") from None
        trained = trained_texts(ref.name) if isinstance(ref, ModelSpec) else None
        models.append(EvalModel(name, worker, trained))
    return models


def _distinct(names: list[str]) -> list[str]:
    """Names as given, a repeated one numbered (#2, #3...) so that rows stay apart."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return out


def run_eval(
    spec: EvaluationSpec | Mapping[str, Any] | str | Path,
    on_progress: Progress | None = None,
    on_start: Callable[[int], None] | None = None,
    limit: int | None = None,
    components: Components | None = None,
    pool: ModelPool | None = None,
) -> Evaluation:
    """Run an evaluation from a spec, a mapping or a YAML file (``limit`` over its
    ``data.limit``). ``on_start(total)`` hears how many prompts will be asked, once everything
    is checked and the models are loaded; ``on_progress(n)`` as each chunk of ``n`` is answered.
    The models load into ``pool`` (an engine's, left open), else into one closed at the end."""
    source = str(spec) if isinstance(spec, (str, Path)) else "<eval>"
    if isinstance(spec, (str, Path)):
        spec = load_eval_spec(spec)
    elif not isinstance(spec, EvaluationSpec):
        spec = build_eval_spec(dict(spec), source)
    if limit is not None:
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"limit": limit})})
    own_pool = pool is None
    try:
        comps = (components or installed_components()).with_templates(spec.templates, EvalError)
        try:
            template = comps.templates.get(spec.template)
        except IftError as exc:
            raise EvalError(f"template: {exc}") from None
        paraphrases = paraphrase_set(template, spec.paraphrases, read_held_out(spec.held_out))
        items = read_items(spec, template, comps)
        if pool is None:
            pool = ModelPool(comps)
        models = load_models(pool, spec.models, template)
    except IftError as exc:
        if own_pool and pool is not None:
            pool.close()
        raise EvalError(f"{source}: {exc}") from None
    settings = GenerationSettings(
        **{"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, **spec.generation.model_dump(exclude_none=True)}
    )
    try:
        if on_start is not None:
            on_start(len(models) * len(paraphrases) * len(items))
        return evaluate(template, paraphrases, items, models, settings, spec.metric, on_progress)
    finally:
        if own_pool:
            pool.close()
