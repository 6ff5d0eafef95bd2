"""``eval: {paraphrases: all}`` in a training file: the freshly trained model evaluated on the
held-out records under each task template's paraphrases, before its folder is renamed into
place. The figures go in ``ift_model.json``; the report and plot beside the model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import TrainError
from ..models.base import GenerationSettings, Model
from ..models.worker import ModelWorker
from ..paraphrases import paraphrase_set, read_held_out
from ..plugins import Components
from .asking import EvalModel, Item, evaluate
from .report import draw_plot, markdown_report
from .spec import DEFAULT_MAX_NEW_TOKENS

if TYPE_CHECKING:  # a training run hands its spec and examples in
    from ..training.data import Example
    from ..training.spec import TrainSpec


def evaluate_trained(
    spec: TrainSpec,
    model: Model,
    examples: tuple[list[Example], list[Example]],
    folder: Path,
    comps: Components,
) -> dict[str, Any]:
    """Per template of the held-out task records: the evaluation's JSON. Writes
    ``eval-TEMPLATE.md`` and ``eval-TEMPLATE.png`` into ``folder``."""
    train_examples, held = examples
    comps = comps.with_templates(spec.templates, TrainError)
    held_out = read_held_out(spec.eval.held_out, "eval.held_out")
    chosen = spec.eval.paraphrases or "all"
    worker = ModelWorker(model)
    results: dict[str, Any] = {}
    try:
        for name in sorted({e.template for e in held if e.template is not None}):
            template = comps.templates.get(name)
            items = [Item(dict(e.values), e.completion) for e in held if e.template == name]
            trained = frozenset(e.instruction for e in train_examples if e.template == name and e.instruction)
            evaluation = evaluate(
                template,
                paraphrase_set(template, chosen, held_out, "eval.paraphrases"),
                items,
                [EvalModel(Path(spec.output).name, worker, trained)],
                GenerationSettings(max_new_tokens=DEFAULT_MAX_NEW_TOKENS),
            )
            draw_plot(evaluation, folder / f"eval-{name}.png")
            (folder / f"eval-{name}.md").write_text(markdown_report(evaluation, f"eval-{name}.png"))
            results[name] = evaluation.to_json()
    finally:
        worker.close()
    return results
