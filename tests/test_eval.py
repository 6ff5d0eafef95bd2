"""`ift eval`: the statistics against hand-computed values, evaluations on the mock backend and
on tiny models (as a user runs them, in subprocesses), bad files, and evaluation after training."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from ift_engine import train
from ift_engine.errors import EvalError
from ift_engine.evaluation import run_eval
from ift_engine.evaluation.stats import Spread, combined_performance_score, mcnemar, wilson_interval
from ift_engine.scores import chrf, rouge_l

RECORDS = [
    {"text": "great hotel", "output": "positive"},
    {"text": "rude staff", "output": "negative"},
    {"text": "ok hotel", "output": "negative"},
]
GOOD = {
    "name": "good",
    "backend": "mock",
    "options": {"answers": {"great": "positive", "rude": "negative", "ok": "negative"}},
}
POSITIVE = {"name": "positive", "backend": "mock", "options": {"default": "positive"}}


def ift(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ift_engine.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


# -- statistics --------------------------------------------------------------------------------


def test_wilson_interval_matches_the_closed_form():
    # 8 right of 10, z = 1.959964: centre (p + z²/2n) / (1 + z²/n), half-width z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)
    z, p, n = 1.959963984540054, 0.8, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(centre - half, abs=1e-9) and high == pytest.approx(centre + half, abs=1e-9)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)


def test_exact_mcnemar_on_a_known_table():
    # 2 pairs where A alone is right, 8 where B alone is, 5 both right, 5 both wrong:
    # p = 2 * P(X <= 2 | n=10, 1/2) = 2 * (1 + 10 + 45) / 1024
    a = [True] * 2 + [False] * 8 + [True] * 5 + [False] * 5
    b = [False] * 2 + [True] * 8 + [True] * 5 + [False] * 5
    test = mcnemar(a, b)
    assert (test.only_a, test.only_b) == (2, 8)
    assert test.p_value == pytest.approx(112 / 1024)
    assert mcnemar([True, False], [True, False]).p_value == 1.0


def test_combined_performance_score_and_spread():
    # best 0.8, mean 0.7: (1 - (0.8 - 0.7)) * 0.8
    assert combined_performance_score([0.8, 0.6, 0.7]) == pytest.approx(0.72)
    # A published value (t0_3b, LMentry "all words from category": MaxP 0.8, AvgP 0.61721, CPS 0.65377)
    assert combined_performance_score([0.8, 2 * 0.6172093023255814 - 0.8]) == pytest.approx(
        0.6537674418604651
    )
    spread = Spread.of([0.8, 0.6, 0.7])
    assert (spread.best, spread.worst, spread.spread) == pytest.approx((0.8, 0.6, 0.2))
    assert spread.std == pytest.approx(math.sqrt(0.02 / 3))


def test_text_scores_come_from_the_libraries():
    # LCS of "the cat sat" and "the cat sat on the mat" is 3 words: P = 1, R = 1/2, F = 2/3
    assert rouge_l("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    # Chinese is scored by characters (rouge-score's own tokenizer would drop it): 5 of 6 in order
    assert rouge_l("这家酒店很好", "这家酒店不好") == pytest.approx(5 / 6)
    assert chrf(["hello world"], ["hello world"]) == pytest.approx(1.0)
    assert chrf(["abc"], ["xyz"]) == 0.0


# -- evaluations on the mock backend --------------------------------------------------------------


def test_accuracy_per_paraphrase_and_the_paired_test():
    result = run_eval(
        {
            "data": {"records": RECORDS},
            "template": "sentiment-en",
            "held_out": ["Sentiment of: {text}"],
            "models": [GOOD, POSITIVE],
        }
    )
    assert [p.id for p in result.paraphrases] == ["p0", "p1", "p2", "p3", "p4", "p5", "h0"]
    good, positive = result.models
    assert all(row.scores["accuracy"] == 1.0 for row in good.paraphrases)
    # Uniform probabilities for "ok hotel" go to the first label, positive: 1 of 3 right.
    assert all(row.scores["accuracy"] == pytest.approx(1 / 3) for row in positive.paraphrases)
    assert positive.summary.cps == pytest.approx(1 / 3) and good.seen is None
    (comparison,) = result.comparisons
    # Over 7 paraphrases x 3 records: good alone right 14 times, positive never: p = 2 / 2**14
    assert (comparison.test.only_a, comparison.test.only_b) == (14, 0)
    assert comparison.test.p_value == pytest.approx(2 / 2**14)


def test_text_answers_are_scored_by_exact_match_rouge_and_chrf():
    result = run_eval(
        {
            "templates": [
                {"name": "capital", "paraphrases": ["Capital of {country}?", "{country}: its capital?"]}
            ],
            "data": {
                "records": [
                    {"country": "France", "output": "Paris"},
                    {"country": "Peru", "output": "the city of Lima"},
                ]
            },
            "template": "capital",
            "models": [
                {"name": "m", "backend": "mock", "options": {"answers": {"France": "Paris", "Peru": "Lima"}}}
            ],
        }
    )
    assert result.metric == "rouge_l"
    for row in result.models[0].paraphrases:
        assert row.scores["exact_match"] == 0.5
        # "Lima" against "the city of Lima": P 1, R 1/4, F 0.4; Paris: 1.0
        assert row.scores["rouge_l"] == pytest.approx((1.0 + 0.4) / 2)
        assert 0 < row.scores["chrf"] < 1


def test_cli_eval_on_the_mock_backend_writes_table_json_report_and_plot(tmp_path):
    write_jsonl(tmp_path / "data.jsonl", RECORDS)
    (tmp_path / "eval.yaml").write_text(
        json.dumps({"data": {"path": "data.jsonl"}, "template": "sentiment-en", "models": [GOOD, POSITIVE]})
    )
    done = ift("eval", "eval.yaml", "--report", "out/report.md", "--plot", "out/plot.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "CPS (Mizrahi et al.)" in done.stdout and "exact McNemar p" in done.stdout
    report = (tmp_path / "out" / "report.md").read_text()
    assert (
        "| p0 | 1.000 (0.439-1.000) | 0.333 (0.061-0.792) |" in report
        and "![accuracy per paraphrase](plot.png)" in report
    )
    assert (tmp_path / "out" / "plot.png").read_bytes()[:4] == b"\x89PNG"
    again = ift("eval", "eval.yaml", "--report", "out/report.md", cwd=tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    shown = ift("eval", "eval.yaml", "--json", "--limit", "2", cwd=tmp_path)
    data = json.loads(shown.stdout)
    assert data["items"] == 2 and data["metric"] == "accuracy" and len(data["models"]) == 2
    row = data["models"][0]["paraphrases"][0]
    assert set(row) == {"id", "accuracy", "ci95", "right", "n", "failed", "seen"}
    assert set(data["models"][0]["summary"]) == {"mean", "best", "worst", "spread", "std", "cps"}
    assert set(data["comparisons"][0]) == {"a", "b", "only_a", "only_b", "p_value"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"modelz": []}, "eval.yaml: modelz: unknown field"),
        ({"paraphrases": [9]}, "eval.yaml: paraphrases: template 'sentiment-en' has paraphrases 0..5, not 9"),
        ({"template": "nope"}, "eval.yaml: template: unknown template 'nope'"),
        ({"held_out": ["no variable here"]}, "variable 'text' is provided but this paraphrase never uses it"),
        ({"data": {"records": [{"text": "x"}]}}, "eval.yaml: data: data.records[0]: field 'output'"),
        (
            {"models": [{"ensemble": "token_average", "members": [{"name": "a", "backend": "mock"}]}]},
            "eval.yaml: models[0]: ensemble 'token_average'",
        ),
    ],
)
def test_bad_evaluation_files_are_one_line_errors(tmp_path, spec, message):
    base = {"data": {"records": RECORDS}, "template": "sentiment-en", "models": [GOOD]}
    (tmp_path / "eval.yaml").write_text(json.dumps({**base, **spec}))
    done = ift("eval", "eval.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_flags_without_a_file_need_data_template_and_model(tmp_path):
    done = ift("eval", "--template", "sentiment-en", cwd=tmp_path)
    assert done.returncode == 2 and "--data (or --source), --model" in done.stderr
    with pytest.raises(EvalError, match="models: List should have at least 1 item"):
        run_eval({"data": {"records": RECORDS}, "template": "sentiment-en", "models": []})


# -- tiny models -------------------------------------------------------------------------------


def test_cli_eval_on_tiny_models_with_flags(tiny_causal_dir, tiny_classifier_dir, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", RECORDS)
    held = tmp_path / "held.yaml"
    held.write_text("- 'Positive or negative? {text}'\n")
    done = ift(
        "eval",
        "--data",
        str(data),
        "--template",
        "sentiment-en",
        "--held-out",
        str(held),
        "--model",
        str(tiny_causal_dir),
        "--model",
        str(tiny_classifier_dir),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [m["name"] for m in result["models"]] == [str(tiny_causal_dir), str(tiny_classifier_dir)]
    for model in result["models"]:
        assert len(model["paraphrases"]) == 7 and all(
            p["n"] == 3 and p["failed"] == 0 for p in model["paraphrases"]
        )
    # The classifier reads only the text: the same answers under every paraphrase.
    assert model["summary"]["spread"] == 0.0


def test_training_runs_the_evaluation_and_records_it(tiny_causal_dir, tmp_path):
    records = [
        {"text": f"{word} hotel {i}", "output": label}
        for i in range(4)
        for word, label in (("great", "positive"), ("rude", "negative"))
    ]
    result = train(
        base_model=str(tiny_causal_dir),
        output=str(tmp_path / "m"),
        datasets=[{"records": records, "template": "sentiment-en", "paraphrases": [0, 1]}],
        eval={"split": 4, "paraphrases": "all", "held_out": ["Positive or negative? {text}"]},
        training={"epochs": 1, "batch_size": 4, "logging_steps": 1, "save_steps": 10, "max_length": 96},
        progress=False,
    )
    manifest = json.loads((result.output / "ift_model.json").read_text())
    assert [t["paraphrase"] for t in manifest["trained_paraphrases"]] == [0, 1]
    evaluation = manifest["eval"]["sentiment-en"]
    seen = [p["seen"] for p in evaluation["models"][0]["paraphrases"]]
    assert seen == [True, True, False, False, False, False, False]
    split = evaluation["models"][0]["seen_vs_unseen"]
    assert split["seen"]["paraphrases"] == 2 and split["unseen"]["paraphrases"] == 5
    assert (result.output / "eval-sentiment-en.png").exists() and "eval-sentiment-en.md" in manifest["files"]
    # ift eval on the trained folder finds the same split from the manifest.
    again = run_eval(
        {"data": {"records": records}, "template": "sentiment-en", "models": [str(result.output)]}
    )
    assert [row.seen for row in again.models[0].paraphrases] == seen[:6]


def test_eval_paraphrases_are_checked_before_training(tiny_causal_dir, tmp_path):
    from ift_engine.errors import TrainError

    with pytest.raises(
        TrainError, match="eval.paraphrases: template 'sentiment-en' has paraphrases 0..5, not 7"
    ):
        train(
            base_model=str(tiny_causal_dir),
            output=str(tmp_path / "m"),
            datasets=[{"records": RECORDS, "template": "sentiment-en"}],
            eval={"split": 1, "paraphrases": [7]},
            progress=False,
        )
    assert not (tmp_path / "m").exists()
