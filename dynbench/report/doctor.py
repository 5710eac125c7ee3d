"""Rendering a doctor report (`doctor.DoctorReport`): a rich table and Markdown (doctor.md)."""

from __future__ import annotations

from dynbench.doctor import FAIL, PASS, SKIP, DoctorReport
from dynbench.report.format import md_table

STYLE = {PASS: "green", FAIL: "bold red", SKIP: "yellow"}
MARK = {PASS: "✅", FAIL: "❌", SKIP: "⏭️"}


def summary_line(report: DoctorReport) -> str:
    counts = {s: sum(c.status == s for c in report.checks) for s in (PASS, FAIL, SKIP)}
    head = "FAIL" if report.exit_code else "OK"
    total = sum(c.seconds for c in report.checks)
    return f"{head}: {counts[PASS]} pass, {counts[FAIL]} fail, {counts[SKIP]} skip in {total:.0f} s"


def _where(report: DoctorReport) -> str:
    env = report.env
    gpu = env.get("gpu_name") or "no GPU"
    return (f"{gpu} · driver {env.get('driver_version') or '—'} · torch {env.get('torch_version')} "
            f"(CUDA {env.get('cuda_version') or '—'}) · transformers {env.get('transformers_version')}")


def render(report: DoctorReport):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"dynbench doctor — {_where(report)} — {summary_line(report)}", title_justify="left")
    for col in ("check", "status", "seconds", "detail"):
        table.add_column(col, justify="right" if col == "seconds" else "left", overflow="fold")
    for c in report.checks:
        table.add_row(c.name, Text(c.status, style=STYLE[c.status]), f"{c.seconds:.1f}", c.detail)
    return table


def to_markdown(report: DoctorReport) -> str:
    rows = [(c.name, f"{MARK[c.status]} {c.status}", f"{c.seconds:.1f}", c.detail) for c in report.checks]
    return (f"### dynbench doctor — {summary_line(report)}\n\n{_where(report)}\n\n"
            + md_table(("check", "status", "seconds", "detail"), rows, (False, False, True, False)))
