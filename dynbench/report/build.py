"""`dynbench report`: a comparison rendered in one format — the mode tables (`tables`) or the
paper's table (`paper`); the one place that knows both, so neither imports the other."""

from __future__ import annotations

import pandas as pd

from dynbench.errors import DynbenchError
from dynbench.report.compare import compare, summary_rows
from dynbench.report.paper import paper_table, paper_to_markdown, render_paper_table
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
    data = paper_table(df) if paper else compare(df)
    if fmt == "csv":
        return to_csv(data)
    if fmt == "md":
        return paper_to_markdown(data) if paper else to_markdown(data, keys, wide)
    return render_paper_table(data) if paper else render_table(data, keys, wide)
