"""Plain-text tables of models compared with a reference over seeds (``stats.compare_to_reference``)."""
from __future__ import annotations

import math

from ..stats import describe_difference


def _pm(row: dict) -> str:
    std = row["std"]
    return f"{row['mean']:.4f} ± {std:.4f} ({row['n']})" if math.isfinite(std) else f"{row['mean']:.4f} (1)"


def comparison_table(summary: dict, reference: str, score: str = "balanced_accuracy",
                     degenerate: dict | None = None) -> str:
    """One line per model: mean ± std (n) of ``score``, then ``reference - model`` with its interval in words.

    summary : ``stats.compare_to_reference`` output; degenerate : {model: runs
    whose test predictions were one class} (shown when non-zero).
    """
    width = max(len(name) for name in summary) + 2
    header = f"{score} mean ± std (n)"
    column = max(28, len(header) + 2)
    lines = [f"{'model':<{width}}{header:<{column}}{reference} - model"]
    for name, row in summary.items():
        flag = f"  [{degenerate[name]} degenerate run(s)]" if degenerate and degenerate.get(name) else ""
        if name == reference:
            lines.append(f"{name:<{width}}{_pm(row):<{column}}(reference){flag}")
            continue
        text = describe_difference(row["reference_minus_model"], reference, name)
        lines.append(f"{name:<{width}}{_pm(row):<{column}}{text.split(' = ', 1)[1]}{flag}")
    return "\n".join(lines)
