"""An ``Evaluation`` shown: a table for the terminal (rich), a markdown report, and a plot of
each model's score per paraphrase with its 95% interval."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from .results import Evaluation, ModelResult, ParaphraseResult

SUMMARY_ROWS = (
    ("mean", "mean"),
    ("best", "best"),
    ("worst", "worst"),
    ("spread (max - min)", "spread"),
    ("std", "std"),
    ("CPS (Mizrahi et al.)", "cps"),
)


def excerpt(text: str, width: int = 48) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def cell(row: ParaphraseResult, metric: str) -> str:
    """``0.812 (0.771-0.848)`` for a share right; the score alone otherwise. A star marks an
    instruction the model was trained on."""
    value = f"{row.scores[metric]:.3f}"
    if metric in ("accuracy", "exact_match"):
        value += f" ({row.interval[0]:.3f}-{row.interval[1]:.3f})"
    return value + (" *" if row.seen else "")


def split_lines(model: ModelResult) -> list[str]:
    """Seen vs unseen instructions, when the model's training instructions are known."""
    parts = []
    for label, group in (("seen", model.seen), ("unseen", model.unseen)):
        if group is not None:
            parts.append(
                f"{label} (mean of {group.paraphrases}) {group.mean:.3f}, pooled {group.pooled:.3f} "
                f"({group.interval[0]:.3f}-{group.interval[1]:.3f})"
            )
    if not parts:
        return []
    drop = f"; drop {100 * model.drop:.1f} points" if model.drop is not None else ""
    return [f"{model.name}: " + "; ".join(parts) + drop]


def comparison_lines(evaluation: Evaluation) -> list[str]:
    return [
        f"{c.a} vs {c.b}: {c.a} alone right on {c.test.only_a}, {c.b} alone on {c.test.only_b}; "
        f"exact McNemar p = {c.test.p_value:.3g}"
        for c in evaluation.comparisons
    ]


def heading(evaluation: Evaluation) -> str:
    held = sum(p.held_out for p in evaluation.paraphrases)
    kind = "accuracy by label log-likelihood" if evaluation.metric == "accuracy" else evaluation.metric
    extra = f" + {held} held out" if held else ""
    return (
        f"template {evaluation.template}: {len(evaluation.paraphrases) - held} paraphrases{extra}, "
        f"{evaluation.items} records; {kind}"
    )


def terminal_table(evaluation: Evaluation) -> Table:
    metric = evaluation.metric
    table = Table(title=escape(heading(evaluation)), title_justify="left")
    table.add_column("paraphrase")
    for model in evaluation.models:
        table.add_column(escape(model.name), justify="right")
    for index, paraphrase in enumerate(evaluation.paraphrases):
        cells = [cell(m.paraphrases[index], metric) for m in evaluation.models]
        table.add_row(f"{paraphrase.id} {escape(excerpt(paraphrase.text))}", *cells)
    table.add_section()
    for label, key in SUMMARY_ROWS:
        table.add_row(label, *(f"{getattr(m.summary, key):.3f}" for m in evaluation.models))
    return table


def notes(evaluation: Evaluation) -> list[str]:
    """The lines under the table: seen vs unseen, paired tests, failed prompts."""
    lines = [line for model in evaluation.models for line in split_lines(model)]
    if any(row.seen for model in evaluation.models for row in model.paraphrases):
        lines.append("* the model was trained on this instruction")
    lines += comparison_lines(evaluation)
    for model in evaluation.models:
        failed = sum(row.failed for row in model.paraphrases)
        if failed:
            lines.append(f"{model.name}: {failed} prompts failed (counted wrong)")
    return lines


def markdown_report(evaluation: Evaluation, plot: str | None = None) -> str:
    """The report: the table of scores per paraphrase and model, the summary across
    paraphrases, seen vs unseen, the paired tests, and the paraphrases in full."""
    metric = evaluation.metric
    names = [m.name.replace("|", "\\|") for m in evaluation.models]
    lines = [f"# ift eval: {evaluation.template}", "", heading(evaluation) + ".", ""]
    if metric in ("accuracy", "exact_match"):
        lines += ["Scores with 95% Wilson intervals.", ""]
    if plot:
        lines += [f"![{metric} per paraphrase]({plot})", ""]
    lines += ["| paraphrase | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for index, paraphrase in enumerate(evaluation.paraphrases):
        cells = [cell(m.paraphrases[index], metric) for m in evaluation.models]
        lines.append(f"| {paraphrase.id} | " + " | ".join(cells) + " |")
    for label, key in SUMMARY_ROWS:
        values = [f"{getattr(m.summary, key):.3f}" for m in evaluation.models]
        lines.append(f"| **{label}** | " + " | ".join(values) + " |")
    lines += [""] + [f"- {line}" for line in notes(evaluation)]
    if evaluation.metric != "accuracy":
        lines += ["", _other_scores(evaluation)]
    lines += ["", "## Paraphrases", ""]
    for paraphrase in evaluation.paraphrases:
        kind = "held out" if paraphrase.held_out else "template"
        text = paraphrase.text.replace("\n", "\\n").replace("|", "\\|")
        lines.append(f"- **{paraphrase.id}** ({kind}): `{text}`")
    lines += [
        "",
        "CPS is the combined performance score of Mizrahi et al. (TACL 2024): "
        "(1 - (best - mean)) x best over the paraphrases.",
        "",
    ]
    return "\n".join(lines)


def _other_scores(evaluation: Evaluation) -> str:
    """Every score of text answers, per model, averaged over paraphrases."""
    rows = ["| model | exact match | ROUGE-L | chrF |", "|---|---|---|---|"]
    for model in evaluation.models:
        count = len(model.paraphrases)
        means = [sum(r.scores[k] for r in model.paraphrases) / count for k in evaluation.scores]
        rows.append(f"| {model.name} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return "Mean over paraphrases:\n\n" + "\n".join(rows)


def draw_plot(evaluation: Evaluation, path: Path) -> None:
    """Each model's score per paraphrase, with its 95% interval for a share right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = evaluation.metric
    count = len(evaluation.paraphrases)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * count + 3), 4))
    width = 0.8 / max(1, len(evaluation.models))
    for k, model in enumerate(evaluation.models):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(count)]
        ys = [row.scores[metric] for row in model.paraphrases]
        if metric in ("accuracy", "exact_match"):
            errors = [
                [y - row.interval[0] for y, row in zip(ys, model.paraphrases)],
                [row.interval[1] - y for y, row in zip(ys, model.paraphrases)],
            ]
            ax.errorbar(xs, ys, yerr=errors, fmt="o", capsize=3, label=model.name)
        else:
            ax.plot(xs, ys, "o", label=model.name)
    ax.set_xticks(range(count), [p.id for p in evaluation.paraphrases])
    ax.set_xlabel("paraphrase (p: template, h: held out)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{evaluation.template}: {metric.replace('_', ' ')} per paraphrase")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
