"""How the report shows its tables: mean ± std, integers as integers, no NaN, no index, nothing cut.

:func:`format_table` turns a table of :mod:`.tables` (numbers, ``<column>_std``
beside a mean) into text cells; :func:`to_html` renders it without the index,
inside a box that scrolls sideways when the page is narrower than the table
(the ``qmlnb-table`` CSS of the report's nbconvert template).
"""
from __future__ import annotations

import html
import math
import re

import pandas as pd

MISSING = "—"  # what an empty cell shows (never "NaN")
# what lets Markdown text become markup: links and images ([text](url), ![..]), autolinks and HTML (<...>),
# code spans (`), character references (&) and the backslash that escapes them
_MARKDOWN_ACTIVE = re.compile(r"[\\`\[\]()!<>&]")
# parameters whose 0 means "chosen automatically" or "not used" (qmlnb.lab.tasks' defaults): shown as such, never
# as "C=0" or "compare_threads 0"
AUTO_ZERO = {"C": "auto", "bandwidth": "auto", "tile": "auto", "compare_threads": "—",
             "pennylane_states": "—", "compare_rounds": "—"}


def setting_value(name: str, value) -> str:
    """A parameter's value as the page shows it: :data:`AUTO_ZERO`'s word for a 0 that means auto or unused."""
    name = str(name).removeprefix("param.")
    if name in AUTO_ZERO and not _missing(value) and not isinstance(value, str) and value == 0:
        return AUTO_ZERO[name]
    return format_value(value)


def natural_key(text) -> list:
    """Sort key that orders the numbers inside names as numbers: ``run2`` before ``run10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def markdown_text(value) -> str:
    """``str(value)`` made inert in Markdown: shown as written, never a link, image, code span or HTML.

    For text that comes from run folders (a recorded data folder, a reason, a
    decision's evidence): ``[click](javascript:...)`` would otherwise render as a
    live link and ``<img onerror=...>`` as HTML.  ``<``, ``>`` and ``&`` become
    character references, the other characters of link, image and code syntax
    get a backslash; line breaks become spaces, so the text cannot start a
    block (a list, a heading, a fenced code block) of its own.
    """
    text = " ".join(str(value).splitlines())
    return _MARKDOWN_ACTIVE.sub(lambda m: {"<": "&lt;", ">": "&gt;", "&": "&amp;"}.get(m[0], "\\" + m[0]), text)


def _missing(value) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def format_value(value) -> str:
    """One cell: "—" when missing, integers without ".0", other numbers to 3 significant digits, text whole."""
    if _missing(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if abs(value) < 1e-12:  # rounding left over from a difference of equal numbers: 0, not 4.44e-17
            return "0"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.3g}"
    if hasattr(value, "item"):  # a numpy scalar
        return format_value(value.item())
    return str(value)


def mean_std(mean, std) -> str:
    """"0.853 ± 0.012" (3 decimals); the mean alone when there is no spread (one run), "—" when missing."""
    if _missing(mean):
        return MISSING
    if _missing(std):
        return f"{float(mean):.3f}"
    return f"{float(mean):.3f} ± {float(std):.3f}"


def median_iqr(median, q1, q3) -> str:
    """"2.5 [2.1–3.0]" (3 significant digits: a 3 ms Gram and a 30 s training both read), "—" when missing."""
    if _missing(median):
        return MISSING
    if _missing(q1) or _missing(q3) or float(q1) == float(q3):  # one run, or no spread: the median alone
        return f"{float(median):.3g}"
    return f"{float(median):.3g} [{float(q1):.3g}–{float(q3):.3g}]"


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """A table of text cells: each ``<c>`` with a ``<c>_std`` beside it becomes "mean ± std" (one column ``<c>``),
    with ``<c>_q1`` and ``<c>_q3`` beside it "median [q1–q3]", every other cell :func:`format_value`;
    ``param.<name>`` columns are named ``<name>``; the index is dropped."""
    out = {}
    for column in table.columns:
        if column.endswith("_std") and column.removesuffix("_std") in table:
            continue
        if column.endswith(("_q1", "_q3")) and column[:-3] in table:
            continue
        name = column.removeprefix("param.")
        if f"{column}_std" in table:
            out[name] = [mean_std(m, s) for m, s in zip(table[column], table[f"{column}_std"])]
        elif f"{column}_q1" in table and f"{column}_q3" in table:
            out[name] = [median_iqr(m, a, b) for m, a, b in zip(table[column], table[f"{column}_q1"],
                                                                 table[f"{column}_q3"])]
        else:
            out[name] = [setting_value(name, v) for v in table[column].astype(object)]
    return pd.DataFrame(out, columns=list(out)).reset_index(drop=True)


def _is_text(cells: pd.Series) -> bool:
    # a column of free text (a reason, a setting), not numbers: it wraps instead of widening the table
    return bool(cells.map(lambda v: len(v) > 24 and not re.fullmatch(r"[-+−\d.,±\[\]–\s%×e]+", v)).any())


def to_html(table: pd.DataFrame) -> str:
    """:func:`format_table` of ``table`` as HTML: no index column, cells escaped and never shortened, in a
    ``qmlnb-scroll`` box (scrolls sideways at narrow widths); columns of free text wrap (``qmlnb-text``).
    A table that says its stage and budget (``attrs``, :mod:`.headline`) carries them as ``data-stage`` and
    ``data-budget``, so a check of the page can tell that no table mixes them."""
    cells = format_table(table)
    text = {c for c in cells.columns if _is_text(cells[c])}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cells.columns)
    body = "".join("<tr>" + "".join(f'<td class="qmlnb-text">{html.escape(v)}</td>' if c in text else
                                    f"<td>{html.escape(v)}</td>" for c, v in zip(cells.columns, row)) + "</tr>"
                   for row in cells.itertuples(index=False))
    data = "".join(f' data-{key}="{html.escape(str(table.attrs[key]))}"' for key in ("stage", "budget")
                   if key in table.attrs)
    return (f'<div class="qmlnb-scroll"><table class="qmlnb-table"{data}><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def notebook_sections(notebook) -> list[str]:
    """The ``## `` headings of a notebook's Markdown cells, in order: the page's sections."""
    import json
    from pathlib import Path

    cells = json.loads(Path(notebook).read_text())["cells"]
    return [line[3:].strip() for c in cells if c["cell_type"] == "markdown"
            for line in "".join(c["source"]).splitlines() if line.startswith("## ")]


def toc_html(sections: list[str]) -> str:
    """The table of contents: one link per section, to the id nbconvert gives its heading."""
    from urllib.parse import quote

    # nbconvert's anchor: the heading's text with spaces as "-", URL-quoted (nbconvert.filters.strings.add_anchor)
    safe = "?/:@!$&'()*+,;="
    links = "".join(f'<li><a href="#{html.escape(quote(t.replace(" ", "-"), safe=safe))}">{html.escape(t)}</a></li>'
                    for t in sections)
    return f'<nav id="qmlnb-toc"><b>Contents</b> (each section opens on a click)<ol>{links}</ol></nav>'


def skipped_summary(overview: pd.DataFrame, names_shown: int = 6) -> pd.DataFrame:
    """Runs that did not complete, grouped by grid, status and full reason: one row each, naturally sorted.

    Columns: grid, status, runs (count), which (the run names, naturally
    sorted; past ``names_shown`` the rest are counted, the full list is in
    ``runs_not_complete.csv``) and reason (the whole reason or error text).
    """
    cols = ["grid", "status", "runs", "which", "reason"]
    rest = overview[overview["status"] != "complete"] if not overview.empty else overview
    if rest.empty:
        return pd.DataFrame(columns=cols)
    rest = rest.assign(reason=rest["note"].map(lambda v: MISSING if _missing(v) or v == "" else str(v)),
                       status=rest["status"].map(lambda v: "unknown" if _missing(v) else str(v)))
    rows = []
    for (grid, status, reason), part in rest.groupby(["grid", "status", "reason"], sort=False):
        names = sorted(part["run"], key=natural_key)
        which = ", ".join(names[:names_shown])
        if len(names) > names_shown:
            which += f" and {len(names) - names_shown} more"
        rows.append({"grid": grid, "status": status, "runs": len(names), "which": which, "reason": reason})
    out = pd.DataFrame(rows, columns=cols)
    order = sorted(range(len(out)), key=lambda i: (natural_key(out.at[i, "grid"]), out.at[i, "status"],
                                                   natural_key(out.at[i, "which"])))
    return out.iloc[order].reset_index(drop=True)
