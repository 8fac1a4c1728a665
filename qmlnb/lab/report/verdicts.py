"""The report's first screen: per dataset, what was found in a few sentences, and one figure.

- :func:`comparison_family`: every paired comparison the report makes (the
  QCNN against its controls, the QSVM against its baselines, the QCNN
  against the CNN with a linear head, the QSVM against the RBF SVM at each
  qubit count of the kernels-at-scale section, the trained kernel against its
  controls), Holm-corrected together
  (:func:`.controls.correct`): "better" needs at least 5 paired seeds and a
  corrected interval without 0.
- :func:`forest_table`: the final stage's two headline comparisons per
  dataset and budget (QCNN − CNN, QSVM − its RBF control), one row each;
  :func:`plot_forest` draws exactly these rows (a plotted value is its cell).
- :func:`dataset_sentences`: per dataset and budget, two to four sentences:
  the best model, the two comparisons (difference, corrected interval, seeds
  won and lost), and the parallel speedup against its stated reference.
- :func:`plot_modes`: the training modes' speedup with its IQR against the
  reference its table names, drawn from that table.
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd

from .. import stages
from . import controls, positive as positive_report

# the QSVM's RBF control, the first present: an RBF SVM on the same embeddings with gamma chosen like the
# quantum bandwidth (kernel-target alignment), else the CV-tuned one
RBF_CONTROLS = ("rbf_svm_embeddings_alignment", "rbf_svm_embeddings")
FOREST_COLUMNS = ["dataset", "budget", "setting", "comparison", "difference", "ci_low", "ci_high", "level", "pairs", "wins",
                  "losses", "identical", "verdict"]
FAMILY = {"qcnn_controls": controls.QCNN_REFERENCE, "qsvm_controls": controls.QSVM_REFERENCE, "qcnn_vs_cnn": "qcnn"}


def comparison_family(frame: pd.DataFrame, scale_summary: pd.DataFrame | None = None,
                      kernel_training: pd.DataFrame | None = None,
                      positive: pd.DataFrame | None = None,
                      sparse: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """{name: table} for the report's comparisons, Holm-corrected across all of them together: the
    :func:`.controls.compare_models` tables of :data:`FAMILY`, under ``"kernels_at_scale"`` the
    :func:`.scale.scale_summary` given (QSVM − RBF per setting and qubit count; its own intervals and verdicts
    replaced by the family's) and, under ``"positive_control"``, the :func:`.positive.positive_comparisons`
    given (quantum - RBF on natural and engineered labels).  ``attrs["size"]`` of each: the number m of
    comparisons in the family (those with a p value), the one the page states.  ``kernel_training``:
    :func:`.kernel_training.comparisons` (the trained kernel - each control per setting), corrected in the
    family under ``"kernel_training"``.  ``sparse``: :func:`.sparse.comparisons` (the sparse quantum kernel - its
    RBF control per budget, k and method), under ``"sparse_kernel"``."""
    from . import scale

    raw = {"qcnn_controls": controls.qcnn_controls(frame), "qsvm_controls": controls.qsvm_controls(frame),
           "qcnn_vs_cnn": controls.qcnn_against_cnn(frame)}
    references = [FAMILY[name] for name in raw]
    if scale_summary is not None:
        raw["kernels_at_scale"] = scale.comparisons(scale_summary)
        references.append(scale.QUANTUM)
    if kernel_training is not None:
        from . import kernel_training as kernel_training_report

        raw["kernel_training"] = kernel_training
        references.append(kernel_training_report.REFERENCE)
    if positive is not None:
        raw["positive_control"] = positive
        references.append(positive_report.REFERENCE)
    if sparse is not None:
        from . import sparse as sparse_report

        raw["sparse_kernel"] = sparse
        references.append(sparse_report.REFERENCE)
    corrected = controls.correct(list(raw.values()), references)
    size = int(sum(pd.to_numeric(t["p_value"], errors="coerce").notna().sum() for t in corrected))
    out = dict(zip(raw, corrected))
    if scale_summary is not None:
        out["kernels_at_scale"] = scale.corrected(scale_summary, out["kernels_at_scale"])
    for table in out.values():
        table.attrs["size"] = size
    return out


def _setting_label(row: pd.Series) -> str:
    return ", ".join(part for part in (row["classes"], row["setting"]) if part)


def forest_table(family: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The final stage's headline comparisons, one row per dataset, budget and comparison: "QCNN − CNN" and
    "QSVM − <RBF control>" (:data:`FOREST_COLUMNS`; ``difference`` is reference − control, positive when the
    quantum model scores higher; ``ci_low``/``ci_high`` at the corrected ``level``)."""
    rows = []
    pick = (("qcnn_vs_cnn", "qcnn", (stages.CNN_BASELINE,), "QCNN − CNN"),
            ("qsvm_controls", "qsvm", RBF_CONTROLS, "QSVM − RBF SVM"))
    for name, reference, models, label in pick:
        table = family.get(name, pd.DataFrame(columns=controls.TABLE_COLUMNS))
        final = table[(table["stage"] == stages.FINAL) & table["reference_minus_model"].notna()]
        for _, task in final.groupby(list(controls.TASK_COLUMNS), sort=True):
            present = [m for m in models if m in set(task["model"])]
            if not present:
                continue
            row = task[task["model"] == present[0]].iloc[0]
            first, control = label.split(" − ")
            words = row["verdict"].replace(f"{reference} better", f"{first} better").replace(
                f"{present[0]} better", f"{control} better")
            rows.append({"dataset": row["dataset"], "budget": _setting_label(row), "setting": row["setting"],
                         "comparison": label,
                         "difference": row["reference_minus_model"], "ci_low": row["ci_low"],
                         "ci_high": row["ci_high"], "level": row["level"], "pairs": int(row["pairs"]),
                         "wins": int(row["wins"]), "losses": int(row["losses"]), "identical": bool(row["identical"]),
                         "verdict": words})
    out = pd.DataFrame(rows, columns=FOREST_COLUMNS)
    from ...data import DATASETS

    rank = {name: i for i, name in enumerate(DATASETS)}
    order = sorted(range(len(out)), key=lambda i: (rank.get(out.at[i, "dataset"], len(rank)), out.at[i, "dataset"],
                                                   out.at[i, "budget"], out.at[i, "comparison"]))
    return out.iloc[order].reset_index(drop=True)


def forest_labels(forest: pd.DataFrame) -> list[str]:
    """One y label per forest row: "digits: QCNN − CNN", with what sets a budget apart ("10 epochs") where a
    dataset has two."""
    labels = []
    for r in forest.itertuples():
        label = f"{r.dataset}: {r.comparison}"
        others = forest.loc[forest["dataset"] == r.dataset, "setting"].unique()
        if len(others) > 1:
            pairs = [dict(p.split("=", 1) for p in s.split(", ") if "=" in p) for s in others]
            mine = dict(p.split("=", 1) for p in r.setting.split(", ") if "=" in p)
            differ = [k for k in mine if len({str(p.get(k)) for p in pairs}) > 1]
            label += " (" + ", ".join(f"{mine[k]} epochs" if k == "epochs" else f"{k} {mine[k]}" for k in differ) + ")"
        labels.append(label)
    return labels


def plot_forest(forest: pd.DataFrame):
    """The forest plot of :func:`forest_table`: each row's difference (dot) and corrected interval (bar), 0 marked.

    Filled dots: "better" after correction; hollow: no verdict; a diamond with no bar: the same difference in
    every seed (no interval).  Drawn from ``forest`` only, row by row, top to bottom.
    """
    import matplotlib.pyplot as plt

    n = len(forest)
    fig, ax = plt.subplots(figsize=(6.2, 0.3 * max(n, 1) + 0.9), layout="constrained")
    y = np.arange(n)[::-1].astype(float)
    for yi, (_, r) in zip(y, forest.iterrows()):
        decided = r["verdict"].endswith(" better")
        colour = "#1a7f37" if decided and r["difference"] > 0 else "#cf222e" if decided else "#57606a"
        if r["identical"] or pd.isna(r["ci_low"]):
            ax.plot([r["difference"]], [yi], marker="D", color=colour, markerfacecolor="white", linestyle="none")
        else:
            ax.errorbar([r["difference"]], [yi], xerr=[[r["difference"] - r["ci_low"]], [r["ci_high"] - r["difference"]]],
                        fmt="o", color=colour, markerfacecolor=colour if decided else "white", capsize=3)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(y, forest_labels(forest), fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel("paired difference in balanced accuracy (quantum − classical), Holm-corrected interval", fontsize=8)
    ax.set_title("quantum model − its classical control (right of 0: the quantum model scores higher)", fontsize=8.5)
    return fig


def _speed(value: float) -> str:
    return f"{value:.2g}×" if value < 10 else f"{value:.0f}×"


def _matches(setting_text: str, setting: dict) -> bool:
    """Whether a comparison's task setting ("n_train=150, epochs=10, ...") agrees with a table's setting dict."""
    pairs = dict(part.split("=", 1) for part in setting_text.split(", ") if "=" in part)
    return all(str(setting[k]) == v for k, v in pairs.items() if k in setting)


def short_budget(setting: dict) -> str:
    """The budget in a few words: "10 epochs, n_train 150, 5 seeds" (the table above says the rest)."""
    parts = [f"{setting['epochs']} epochs"] if "epochs" in setting else []
    parts += [f"{k} {setting[k]}" for k in ("n_train", "batch_size", "threads") if k in setting]
    return ", ".join(parts)


def modes_sentence(table: pd.DataFrame) -> str:
    """One sentence on a :func:`.headline.modes_tables` table: each parallel mode's speedup (median [IQR])
    against the reference the table names."""
    parallel = table[table["mode"].isin(["fold-parallel", "data-parallel"]) & table["speedup"].notna()]
    if parallel.empty:
        return ""
    parts = []
    for _, r in parallel.iterrows():
        low, high = f"{r['speedup_q1']:.2g}", f"{r['speedup_q3']:.2g}"
        spread = f" [{low}–{high}]" if low != high else ""  # no "[0.57–0.57]"
        parts.append(f"{r['mode']} {_speed(r['speedup'])}{spread}")
    word = ("faster" if (parallel["speedup"] > 1).all() else "slower" if (parallel["speedup"] < 1).all()
            else "mixed")
    epochs = table.attrs["setting"].get("epochs")
    budget = f" ({epochs} epochs)" if epochs is not None else ""
    return f"Parallel{budget}: {', '.join(parts)} the speed of {table.attrs['reference']}: {word}."


def dataset_sentences(final: list[pd.DataFrame], modes: list[pd.DataFrame], forest: pd.DataFrame) -> list[dict]:
    """Per dataset (catalogue order) and budget of the final stage: {"dataset", "budget", "lines"}, the lines
    being the best model, its comparisons at that budget (:func:`forest_table` rows) and, once per dataset,
    the training modes' speedup (:func:`modes_sentence`)."""
    out, said = [], set()
    for table in final:
        dataset, setting = table.attrs["dataset"], table.attrs["setting"]
        best = table.iloc[0]
        std = "" if pd.isna(best["balanced accuracy_std"]) else f" ± {best['balanced accuracy_std']:.3f}"
        lines = [f"Best: {best['model']}, {best['balanced accuracy']:.3f}{std} balanced accuracy."]
        mine = forest[(forest["dataset"] == dataset) & forest["setting"].map(lambda t: _matches(t, setting))]
        lines += [forest_sentence(r) for _, r in mine.iterrows()]
        if dataset not in said:
            said.add(dataset)
            lines += [m for m in (modes_sentence(t) for t in modes if t.attrs["dataset"] == dataset) if m]
        seeds = len(table.attrs.get("seeds", [])) or int(best["n"])
        out.append({"dataset": dataset, "budget": f"{short_budget(setting)}, {seeds} seeds", "lines": lines})
    return out


def forest_sentence(r: pd.Series) -> str:
    """A forest row in words: "QCNN − CNN = −0.018 [−0.041, +0.005]; QCNN lost in all 5 seeds: no measurable
    difference."; the same difference in every seed said as such."""
    model = r["comparison"].split(" ")[0]
    number = controls._number(r["difference"]).replace("-", "−")
    record = controls.record(r["wins"], r["losses"], r["pairs"], model).replace(f" of {r['pairs']} seeds", "")
    if r["identical"]:
        return f"{r['comparison']}: {number} in every one of {r['pairs']} seeds (no interval): {r['verdict']}."
    interval = ("" if pd.isna(r["ci_low"]) else
                f" [{controls._number(r['ci_low'])}, {controls._number(r['ci_high'])}]".replace("-", "−"))
    return f"{r['comparison']} = {number}{interval}; {record}: {r['verdict']}."


def figure_png(fig) -> str:
    """A matplotlib figure as a PNG data URI (the first screen's figure sits beside its sentences)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def first_screen_html(blocks: list[dict], forest_png: str | None, warnings: list[str] = (), family_size: int = 0) -> str:
    """The verdict block: per dataset its sentences, the forest plot beside them (below at narrow widths), then
    the header's warnings.  Run-provided text is escaped."""
    parts = []
    for b in blocks:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in b["lines"])
        parts.append(f'<div class="qmlnb-dataset"><b>{html.escape(b["dataset"])}</b> '
                     f'<span class="qmlnb-budget">({html.escape(b["budget"])})</span><ul>{items}</ul></div>')
    if not blocks:
        parts.append("<p>No complete run of the final stage (params/70-final.yaml) yet: no verdict.</p>")
    rule = (f"Intervals: paired over seeds, Holm-corrected across the report's {family_size} comparisons; "
            "“better” needs at least 5 paired seeds and an interval without 0.")
    figure = (f'<figure class="qmlnb-forest"><img alt="forest plot of the paired differences" src="{forest_png}">'
              "</figure>" if forest_png else "")
    warn = "".join(f'<p class="qmlnb-warning">Warning: {html.escape(w)}.</p>' for w in warnings)
    return (f'<div id="qmlnb-verdict" class="qmlnb-verdict"><div class="qmlnb-sentences">{"".join(parts)}'
            f'<p class="qmlnb-rule">{html.escape(rule)}</p>{warn}</div>{figure}</div>')


def plot_modes(tables: list[pd.DataFrame]):
    """The training modes' speedup (median, IQR bars) per dataset, drawn from :func:`.headline.modes_tables`'
    tables: the same reference as each table (the dashed line at 1), named in the title."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 3.4), layout="constrained")
    modes = ("sequential", "fold-parallel", "data-parallel")
    width = 0.8 / len(modes)
    labels, shown = [], set()
    for i, table in enumerate(tables):
        labels.append(f"{table.attrs['dataset']}\n{table.attrs['budget'].split(';')[0]}")
        for j, mode in enumerate(modes):
            row = table[table["mode"] == mode]
            if row.empty or pd.isna(row["speedup"].iloc[0]):
                continue
            r = row.iloc[0]
            ax.bar(i + (j - 1) * width, r["speedup"], width, color=f"C{j}", label=None if mode in shown else mode,
                   yerr=[[r["speedup"] - r["speedup_q1"]], [r["speedup_q3"] - r["speedup"]]], capsize=3)
            shown.add(mode)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(tables)), labels, fontsize=7)
    references = sorted({t.attrs["reference"] for t in tables})
    ax.set_ylabel("speedup (median, IQR)")
    ax.set_title(f"speedup against {' / '.join(references)} (dashed: 1)", fontsize=8.5)
    ax.legend(fontsize=7)
    return fig
