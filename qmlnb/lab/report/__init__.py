"""The summary report: run folders -> tables, plots and one self-contained HTML page.

``load``    reads complete run folders into one DataFrame (a row per run);
``tables``  the benchmark and score tables computed from it;
``plots``   the figures;
``present`` how tables show (mean ± std, median [IQR], no NaN, no index), the table of contents and the
            grouped skipped summary;
``headline`` the headline tables (one stage and budget each) and the simulators' table;
``verdicts`` the first screen: sentences per dataset and the forest plot, from Holm-corrected comparisons;
``header``  the page's header (date, commit, machine, versions, BLAS, data folder, load);
``export``  runs the summary notebook with papermill and exports it with nbconvert
            (``python -m qmlnb report``).

The summary notebook calls these as ``report.<name>``, so the public names are
handed on here.
"""
from .export import SUMMARY_NOTEBOOK, add_arguments, build_report, export_html, run
from .load import (UNREADABLE, ReportError, load_runs, load_tables, read_run, report_dirs, require_runs,
                   run_overview, select_stage, select_task, unreadable_runs)
from .header import header_fields, header_markdown
from .present import format_table, natural_key, notebook_sections, skipped_summary, to_html, toc_html
from .plots import plot_gram_scaling, plot_kernel, plot_sweep, plot_threads, save_figure
from .tables import (SCORES, backend_speedup, fit_loglog_slope, gram_headline, gram_slopes, gram_table,
                     kernel_matrices, results_table, save_table, setting_columns, slope_range, sweep_table,
                     threads_speedup, training_modes)

__all__ = [
    "SCORES", "SUMMARY_NOTEBOOK", "UNREADABLE", "ReportError", "add_arguments", "backend_speedup",
    "build_report", "export_html", "fit_loglog_slope", "format_table", "gram_headline", "gram_slopes",
    "gram_table", "header_fields", "header_markdown", "kernel_matrices", "natural_key", "notebook_sections",
    "setting_columns", "toc_html",
    "skipped_summary", "slope_range", "to_html",
    "load_runs", "load_tables", "plot_gram_scaling", "plot_kernel", "plot_sweep", "plot_threads",
    "read_run", "report_dirs", "require_runs", "results_table", "run", "run_overview",
    "save_figure", "save_table", "select_stage", "select_task", "sweep_table", "threads_speedup", "training_modes",
    "unreadable_runs",
]
