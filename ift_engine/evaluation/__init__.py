"""``ift eval``: a model's accuracy across instruction paraphrases, and models compared.

>>> from ift_engine.evaluation import run_eval
>>> result = run_eval("eval.yaml")
>>> result.models[0].summary.cps
"""

from ..paraphrases import Paraphrase, paraphrase_set
from .asking import EvalModel, Item, evaluate
from .results import Evaluation, ModelResult, ParaphraseResult
from .setup import run_eval, trained_texts
from .spec import EvaluationSpec, load_eval_spec

__all__ = [
    "EvalModel",
    "Evaluation",
    "EvaluationSpec",
    "Item",
    "ModelResult",
    "Paraphrase",
    "ParaphraseResult",
    "evaluate",
    "load_eval_spec",
    "paraphrase_set",
    "run_eval",
    "trained_texts",
]
