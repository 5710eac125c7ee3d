"""`dynbench report`: a comparison rendered in one format — the mode tables (`tables`) or the
paper's tables (`paper`: Table 4; `quality_table`: Table 3); the one place that knows them all, so
none imports another."""

from __future__ import annotations

import pandas as pd

from dynbench.errors import DynbenchError
from dynbench.report.compare import compare, summary_rows
from dynbench.report.paper import paper_table, paper_to_markdown, render_paper_table
from dynbench.report.quality_table import quality_table, quality_to_markdown, render_quality_table
from dynbench.report.tables import column_keys, render_table, to_csv, to_markdown

FORMATS = ("table", "md", "csv")


def build_report(df: pd.DataFrame, fmt: str = "table", paper: bool = False, columns: str | None = None,
                 wide: bool = False) -> list | str:
    """`dynbench report`: rich Tables for `table`, a string for `md` / `csv` (every column)."""
    keys = column_keys(columns)
    if fmt not in FORMATS:
        raise DynbenchError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not summary_rows(df):
        raise DynbenchError("the results hold no summary rows (step null): the run was interrupted "
                            "before any point finished; run it again with --resume")
    if paper:
        return _paper_views(df, fmt)
    data = compare(df)
    if fmt == "csv":
        return to_csv(data)
    if fmt == "md":
        return to_markdown(data, keys, wide)
    return render_table(data, keys, wide)


def _paper_views(df: pd.DataFrame, fmt: str) -> list | str:
    """`--paper`: Table 3 (quality beside cost) of the dataset points, Table 4 of the others."""
    is_dataset = df["dataset"].notna() if "dataset" in df.columns else pd.Series(False, index=df.index)
    views = []
    if (~is_dataset).any() and summary_rows(df[~is_dataset]):
        views.append((paper_table(df[~is_dataset]), paper_to_markdown, render_paper_table))
    if is_dataset.any():
        views.append((quality_table(df[is_dataset]), quality_to_markdown, render_quality_table))
    if fmt == "csv":
        return "\n".join(to_csv(data) for data, _, _ in views)
    if fmt == "md":
        return "\n".join(md(data) for data, md, _ in views)
    return [table for data, _, rich in views for table in rich(data)]
