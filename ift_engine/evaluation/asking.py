"""Asking every model every record under every paraphrase, and scoring the answers.

All prompts of a model (paraphrases x records) are submitted to its worker at once, in
chunks of its batch size, so the worker batches them and every model works at the same time;
a progress callback hears of each chunk answered. Label answers are scored as workflow label
nodes score them: the label the model's ``classify`` finds most likely (a causal LM's
log-likelihood of each label as the answer); a model that cannot classify generates text, and
the first label it names is its answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from ..models.base import GenerationSettings, Prompt
from ..models.worker import Completion, Worker
from ..paraphrases import Paraphrase
from ..parsers import find_label
from ..scores import chrf, exact_match, mean_rouge_l
from ..templates import AnswerForm, InstructionTemplate
from .results import Comparison, Evaluation, GroupScore, ModelResult, ParaphraseResult
from .stats import Spread, mcnemar, wilson_interval

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Item:
    """One labelled record: the template's variables and the reference answer."""

    values: Mapping[str, str]
    reference: str


@dataclass(frozen=True)
class EvalModel:
    """A model to evaluate: its name in tables, its worker, and the instruction texts it was
    trained on (None when not known)."""

    name: str
    worker: Worker
    trained: frozenset[str] | None = None


def asking_template(template: InstructionTemplate, paraphrases: Sequence[Paraphrase]) -> InstructionTemplate:
    """``template`` with exactly ``paraphrases`` (held-out ones included), for rendering."""
    return InstructionTemplate(
        name=template.name,
        task=template.task,
        paraphrases=tuple(p.text for p in paraphrases),
        variables=template.variables,
        language=template.language,
        answer=template.answer,
        labels=template.labels,
        system=template.system,
    )


def _chunks(
    worker: Worker,
    prompts: Sequence[Prompt],
    labels: tuple[str, ...] | None,
    settings: GenerationSettings,
) -> list[Future[list[Any]]]:
    """The prompts submitted in chunks of the worker's batch size: classified when ``labels``
    is given, else generated."""
    size = max(1, worker.max_batch)
    futures: list[Future[list[Any]]] = []
    for start in range(0, len(prompts), size):
        chunk = prompts[start : start + size]
        if labels is not None:
            futures.append(worker.classify(chunk, labels))  # batched with ensembles' members too
        else:
            futures.append(worker.generate(chunk, settings))  # type: ignore[arg-type]
    return futures


def _answer(outcome: object, labels: tuple[str, ...]) -> str | None:
    """A label (from probabilities), generated text, or None for a failed prompt."""
    if isinstance(outcome, Completion):
        return outcome.text
    if isinstance(outcome, list):
        return labels[max(range(len(outcome)), key=outcome.__getitem__)]  # ties: lowest index
    return None


def _label_of(answer: str | None, labels: tuple[str, ...]) -> str | None:
    """The label a classified answer is, or the first one a generated answer names."""
    if answer is None or answer in labels:
        return answer
    index = find_label(answer, labels)
    return None if index is None else labels[index]


def _score(
    template: InstructionTemplate, answers: list[str | None], items: Sequence[Item]
) -> tuple[list[bool], dict[str, float]]:
    """Right or wrong per record, and the scores of one paraphrase's answers."""
    references = [item.reference for item in items]
    if template.answer is AnswerForm.LABEL:
        chosen = [_label_of(a, template.labels) for a in answers]
        correct = [c == r for c, r in zip(chosen, references)]
        return correct, {"accuracy": sum(correct) / len(correct)}
    texts = [a or "" for a in answers]
    correct = [a is not None and exact_match(a, r) for a, r in zip(answers, references)]
    return correct, {
        "exact_match": sum(correct) / len(correct),
        "rouge_l": mean_rouge_l(texts, references),
        "chrf": chrf(texts, references),
    }


def _group(results: list[ParaphraseResult], metric: str) -> GroupScore | None:
    if not results:
        return None
    right = sum(sum(r.correct) for r in results)
    total = sum(len(r.correct) for r in results)
    mean = sum(r.scores[metric] for r in results) / len(results)
    return GroupScore(len(results), mean, right / total, wilson_interval(right, total))


def _model_result(name: str, results: list[ParaphraseResult], metric: str, known: bool) -> ModelResult:
    result = ModelResult(name, results, Spread.of([r.scores[metric] for r in results]))
    if known:
        result.seen = _group([r for r in results if r.seen], metric)
        result.unseen = _group([r for r in results if not r.seen], metric)
    return result


def evaluate(
    template: InstructionTemplate,
    paraphrases: Sequence[Paraphrase],
    items: Sequence[Item],
    models: Sequence[EvalModel],
    settings: GenerationSettings,
    metric: str = "rouge_l",
    on_progress: Progress | None = None,
) -> Evaluation:
    """Every model asked every item under every paraphrase (see the module docstring)."""
    if not items:
        raise ValueError("no records to evaluate")
    label = template.answer is AnswerForm.LABEL
    metric = "accuracy" if label else metric
    asking = asking_template(template, paraphrases)
    prompts = [
        [list(asking.render(item.values, paraphrase=j).messages) for item in items]
        for j in range(len(paraphrases))
    ]
    submitted = []
    for model in models:
        classifies = label and model.worker.model.can("classify")
        labels = template.labels if classifies else None
        per_paraphrase = [_chunks(model.worker, ps, labels, settings) for ps in prompts]
        if on_progress is not None:
            for futures in per_paraphrase:
                for future in futures:
                    future.add_done_callback(lambda f: on_progress(len(f.result())))
        submitted.append(per_paraphrase)
    results = []
    for model, per_paraphrase in zip(models, submitted):
        rows = []
        for paraphrase, futures in zip(paraphrases, per_paraphrase):
            answers = [_answer(o, template.labels) for f in futures for o in f.result()]
            correct, scores = _score(template, answers, items)
            seen = None if model.trained is None else paraphrase.text in model.trained
            interval = wilson_interval(sum(correct), len(correct))
            rows.append(ParaphraseResult(paraphrase, correct, scores, interval, answers.count(None), seen))
        results.append(_model_result(model.name, rows, metric, model.trained is not None))
    comparisons = [
        Comparison(a.name, b.name, mcnemar(_flat(a), _flat(b))) for a, b in combinations(results, 2)
    ]
    return Evaluation(
        template.name, template.answer.value, metric, len(items), list(paraphrases), results, comparisons
    )


def _flat(result: ModelResult) -> list[bool]:
    return [right for row in result.paraphrases for right in row.correct]
