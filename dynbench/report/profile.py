"""Rendering a profile (`profile.ProfileResult`): three rich tables — top-level ranges and
`other` (they add up to the traced total), nested ranges with the method's overhead, top
operators. CUDA columns only when the CUDA activity was traced."""

from __future__ import annotations

from dynbench.profile import OTHER, ProfileResult
from dynbench.report.format import DASH


def _ms(v: float | None) -> str:
    return DASH if v is None else f"{v:.3f}"


def _pct(v: float | None) -> str:
    return DASH if v is None else f"{100 * v:.1f}%"


def _table(title: str, caption: str, columns: list[str]):
    from rich.table import Table

    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 or name == "in" else "right")
    return table


def render(result: ProfileResult) -> list:
    """Three rich tables: top-level ranges + other (= the traced total), nested ranges with the
    method's overhead, top operators. CUDA columns only when the CUDA activity was traced."""
    cuda = result.device_total_ms is not None
    runs = f"summed over {result.active} active run{'s' if result.active > 1 else ''}"
    head = f"{result.model} · {result.method} · {result.mode}"
    total = result.traced_total_ms
    share = lambda ms: ms / total if total else 0.0

    cols = ["range", "calls", "CPU ms", "% total", "outside ops ms"] + (["CUDA ms", "% CUDA"] if cuda else [])
    t1 = _table(
        f"Ranges — {head}",
        f"traced total = CPU wall time of the active ProfilerStep ranges ({runs}); "
        "other = time outside every top-level range; outside ops = host time in a range outside any operator",
        cols,
    )
    for r in result.ranges:
        device = [_ms(r.device_ms), _pct(r.device_share)] if cuda else []
        calls = "" if r.calls is None else str(r.calls)
        t1.add_row(r.name, calls, _ms(r.cpu_ms), _pct(r.share), _ms(r.outside_ops_ms), *device,
                   style="dim" if r.name == OTHER else None)
    device = [_ms(result.device_total_ms), _pct(1.0)] if cuda else []
    t1.add_row("traced total", "", _ms(total), _pct(1.0), "", *device, style="bold", end_section=True)

    cols = ["range", "in", "calls", "CPU ms", "% parent", "% total"]
    cols += ["CUDA ms", "% parent CUDA", "% total CUDA"] if cuda else []
    overhead = result.method_overhead_ms
    t2 = _table(
        f"Nested ranges — {head}",
        f"* added by the method: overhead {overhead:.3f} ms = {_pct(share(overhead))} of the traced total",
        cols,
    )
    for n in result.nested:
        device = [_ms(n.device_ms), _pct(n.device_share_of_parent), _pct(n.device_share_of_total)] if cuda else []
        t2.add_row(f"{n.name} *" if n.method_specific else n.name, n.parent, str(n.calls), _ms(n.cpu_ms),
                   _pct(n.share_of_parent), _pct(n.share_of_total), *device)

    cols = ["operator", "calls", "self CPU ms", "% total"] + (["self CUDA ms", "% CUDA"] if cuda else [])
    t3 = _table(f"Top operators by self {'CUDA' if cuda else 'CPU'} time — {head}", runs, cols)
    for o in result.top_ops:
        device = [_ms(o.self_device_ms), _pct(o.self_device_share)] if cuda else []
        t3.add_row(o.name, str(o.calls), _ms(o.self_cpu_ms), _pct(o.self_cpu_share), *device)
    return [t1, t2, t3]
