"""Reports from result records: tables (`tables.py`) and charts (`plots.py`).

Data first, rendering separate: `compare` / `paper_table` return DataFrames of raw SI numbers;
`render_*` / `to_markdown` / `to_csv` turn them into text, and only they add units.
Nothing here measures anything; every number shown comes from a record.
"""

from dynbench.report.tables import (
    build_report,
    compare,
    load_results,
    paper_table,
    paper_to_markdown,
    render_paper_table,
    render_table,
    summary_table,
    to_csv,
    to_markdown,
)

__all__ = [
    "build_report",
    "compare",
    "load_results",
    "paper_table",
    "paper_to_markdown",
    "render_paper_table",
    "render_table",
    "summary_table",
    "to_csv",
    "to_markdown",
]
