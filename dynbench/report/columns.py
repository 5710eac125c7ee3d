"""The column list of docs/records.md, generated from the schema (`records.COLUMNS`), so the two cannot
drift. `make docs` rewrites the block between the markers; a test checks it is current.
"""

from __future__ import annotations

from pathlib import Path

from dynbench.records import COLUMNS, STEP, SUMMARY

BEGIN = "<!-- columns: generated from dynbench/records.py by `make docs`; do not edit by hand -->"
END = "<!-- end of columns -->"


def columns_markdown() -> str:
    """One Markdown table per group: column, unit, which rows carry it, which modes fill it, meaning."""
    from dynbench.report.format import md_table

    groups: dict[str, list[tuple[str, ...]]] = {}
    for c in COLUMNS:
        rows = {SUMMARY: "summary", STEP: "step"}.get(c.rows, "both")
        modes = "all" if len(c.modes) == 3 else ", ".join(c.modes)
        groups.setdefault(c.group, []).append((f"`{c.name}`", c.unit, rows, modes, c.doc))
    parts = [f"**{group}**\n\n" + md_table(("column", "unit", "rows", "modes", "meaning"), items)
             for group, items in groups.items()]
    return "\n".join(parts)


def readme_block() -> str:
    return f"{BEGIN}\n{columns_markdown()}{END}"


RECORDS_DOC = Path(__file__).resolve().parents[2] / "docs" / "records.md"


def update_readme(path: str | Path = RECORDS_DOC) -> bool:
    """Rewrite the generated block in `path`; True when it changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    new = text[:start] + readme_block() + text[stop:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    print("docs/records.md updated" if update_readme() else "docs/records.md already current")
