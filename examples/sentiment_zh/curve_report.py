"""CURVE.md and learning_curve.png from curve.json (written by curve.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ift_engine.evaluation.stats import mcnemar, wilson_interval

#: Held-out paraphrases h1-h5 are the user-style ones, h6-h8 name labels no training text uses.
USER_STYLE, NOVEL_WORDING = range(1, 6), range(6, 9)


def pooled(correct: list[bool]) -> str:
    low, high = wilson_interval(sum(correct), len(correct))
    return f"{sum(correct) / len(correct):.3f} ({low:.3f}-{high:.3f})"


def per_sample(correct: list[bool], samples: int) -> str:
    size = len(correct) // samples
    return " / ".join(f"{sum(correct[k * size : (k + 1) * size]) / size:.3f}" for k in range(samples))


def first(evaluation: dict[str, Any]) -> list[bool]:
    """The answers right or wrong under the evaluation's first paraphrase."""
    return evaluation["models"][0]["paraphrases"][0]["correct"]


def curve_rows(results: dict[str, Any]) -> list[str]:
    samples = results["samples"]
    lines = [
        "| training reviews | TF-IDF + LR, pooled (95% interval) | per sample | IFT, pooled (95% interval) "
        "| per sample | IFT - TF-IDF | IFT alone right / TF-IDF alone right | McNemar p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in results["sizes"]:
        tfidf = first(results["tfidf"][str(size)])
        entry = results.get("ift", {}).get(str(size), {})
        if "curve" not in entry:
            lines.append(f"| {size} | {pooled(tfidf)} | {per_sample(tfidf, samples)} | (not run) | | | | |")
            continue
        ift = first(entry["curve"])
        test = mcnemar(ift, tfidf)
        gap = (sum(ift) - sum(tfidf)) / len(ift) * 100
        lines.append(
            f"| {size} | {pooled(tfidf)} | {per_sample(tfidf, samples)} | {pooled(ift)} | "
            f"{per_sample(ift, samples)} | {gap:+.1f} points | {test.only_a} / {test.only_b} | {test.p_value:.3g} |"
        )
    return lines


def paraphrase_rows(results: dict[str, Any]) -> list[str]:
    runs = {
        key: results["ift"][key]["paraphrases"]
        for key in ("2000", "2000-plain")
        if "paraphrases" in results.get("ift", {}).get(key, {})
    }
    if not runs:
        return ["(not run)"]
    names = {"2000": "with label wordings", "2000-plain": "without (ablation)"}
    lines = [
        "| instruction | seen | " + " | ".join(names[k] for k in runs) + " |",
        "|---|---|" + "---|" * len(runs),
    ]
    any_run = next(iter(runs.values()))
    for index, paraphrase in enumerate(any_run["paraphrases"]):
        rows = [run["models"][0]["paraphrases"][index] for run in runs.values()]
        seen = "yes" if rows[0]["seen"] else "no"
        cells = " | ".join(f"{r['accuracy']:.3f}" for r in rows)
        text = paraphrase["text"].replace("\n", " / ").replace("|", "\\|")
        lines.append(f"| {paraphrase['id']}: {text} | {seen} | {cells} |")
    lines += [
        "",
        "| across instructions | " + " | ".join(names[k] for k in runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    groups = [
        ("seen, mean of 3", lambda i, p: p["seen"]),
        ("unseen, mean of 8", lambda i, p: not p["seen"]),
        ("unseen in a user's style (h1-h5)", lambda i, p: i - 2 in USER_STYLE),
        ("unseen label words (h6-h8)", lambda i, p: i - 2 in NOVEL_WORDING),
    ]
    for title, keep in groups:
        cells = []
        for run in runs.values():
            rows = [p for i, p in enumerate(run["models"][0]["paraphrases"]) if keep(i, p)]
            cells.append(f"{sum(r['accuracy'] for r in rows) / len(rows):.3f}")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    drops = [run["models"][0]["seen_vs_unseen"]["drop"] * 100 for run in runs.values()]
    lines.append("| drop, seen to unseen (ift eval) | " + " | ".join(f"{d:.1f} points" for d in drops) + " |")
    return lines


def ablation_line(results: dict[str, Any]) -> list[str]:
    """The two 2,000-review runs compared answer by answer on the same (review, instruction)
    pairs: all of them, and the unseen instructions only."""
    ift = results.get("ift", {})
    if "paraphrases" not in ift.get("2000-plain", {}) or "paraphrases" not in ift.get("2000", {}):
        return []
    lines = []
    runs = [ift[key]["paraphrases"]["models"][0]["paraphrases"] for key in ("2000", "2000-plain")]
    for title, keep in (("every instruction", lambda p: True), ("the unseen ones", lambda p: not p["seen"])):
        wording, plain = ([c for p in run if keep(p) for c in p["correct"]] for run in runs)
        test = mcnemar(wording, plain)
        lines.append(
            f"- Over {title} ({len(wording)} answers): with label wordings {pooled(wording)}, "
            f"without {pooled(plain)}; alone right {test.only_a} / {test.only_b}, McNemar p = {test.p_value:.3g}."
        )
    return lines


def plot_curve(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series = [("TF-IDF + LR", {s: results["tfidf"][str(s)] for s in results["sizes"]}, "tab:orange")]
    tuned = {
        s: results["ift"][str(s)]["curve"]
        for s in results["sizes"]
        if "curve" in results.get("ift", {}).get(str(s), {})
    }
    series.append(("IFT SmolLM2-135M (LoRA, at least 3,000 examples seen)", tuned, "tab:blue"))
    for label, points, colour in series:
        sizes = sorted(points)
        accuracies, lows, highs = [], [], []
        for size in sizes:
            correct = first(points[size])
            low, high = wilson_interval(sum(correct), len(correct))
            accuracies.append(sum(correct) / len(correct))
            lows.append(accuracies[-1] - low)
            highs.append(high - accuracies[-1])
        ax.errorbar(sizes, accuracies, yerr=[lows, highs], marker="o", capsize=3, label=label, color=colour)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(results["sizes"], [str(s) for s in results["sizes"]])
    ax.set_xlabel("training reviews")
    ax.set_ylabel("accuracy, 900 held-out reviews (95% interval)")
    ax.set_title("Chinese review sentiment: learning curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_curve_report(results: dict[str, Any], here: Path) -> None:
    plot_curve(results, here / "learning_curve.png")
    minutes = {k: v["minutes"] for k, v in results.get("ift", {}).items() if "minutes" in v}
    lines = [
        "# Learning curve and label wordings (SmolLM2-135M-Instruct, LoRA)",
        "",
        f"Held out: {results['samples']} disjoint balanced samples of {results['sample_size']} short "
        "reviews (8-50 characters) that no training set holds; accuracy pooled over all of them "
        "with its 95% Wilson interval, and per sample. Training sets are nested (the first N of one "
        "balanced, shuffled pool), the same for both methods. Every figure comes from the engine's "
        "evaluation (`ift_engine.evaluation`, what `ift eval` runs); McNemar tests are exact and "
        "paired over the same reviews. Produced by `python examples/sentiment_zh/curve.py`.",
        "",
        "![learning curve](learning_curve.png)",
        "",
        *curve_rows(results),
        "",
        "IFT is asked with sentiment-zh p0 (seen in training); TF-IDF + LR reads the review alone.",
        f"Training settings: `{results['training']}` with the LoRA of REPORT.md; minutes per run: "
        + ", ".join(f"{k}: {v:.1f}" for k, v in minutes.items())
        + ".",
        "",
        "## Seen and unseen instructions, 2,000 training reviews",
        "",
        f"{results.get('robust_reviews', 200)} reviews of the first held-out sample (half of each label), "
        "every instruction asked on each; `seen` is what `ift eval` reads from the model's manifest. "
        "The paired tests below count every (review, instruction) answer, and one review's answers "
        "under eleven instructions are not independent: read their p-values as optimistic.",
        "",
        *paraphrase_rows(results),
        "",
        *ablation_line(results),
    ]
    reading = here / "curve_reading.md"  # written by hand after a run, kept when the report is rewritten
    if reading.exists():
        lines += ["", reading.read_text().rstrip()]
    (here / "CURVE.md").write_text("\n".join(lines) + "\n")
