"""The only formatters: units, Δ%, run-length lists, point labels and Markdown escaping.

Records hold raw SI numbers (bytes, ms, tera-MACs); units are added here and nowhere else, so a
table, a chart axis, a gate note and a Markdown summary say the same thing the same way. A leaf
module: it imports nothing from dynbench but the names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

DASH = "—"  # not measured / not defined (never 0)

_BYTES = ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B"))
_TERA = ((1.0, "T"), (1e-3, "G"), (1e-6, "M"), (1e-9, "k"))  # values given in tera-units
_MS = ((1000.0, "s"), (1.0, "ms"), (1e-3, "µs"))


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return DASH
    if abs(n) >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if abs(n) >= 2**20:
        return f"{n / 2**20:.2f} MiB"
    return f"{n / 2**10:.1f} KiB" if n else "0 B"


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return DASH
    if abs(ms) >= 10_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms:.3g} ms" if abs(ms) < 100 else f"{ms:.0f} ms"


def fmt_t(t: float | None) -> str:
    """Tera-quantities (TMACs, TFLOPs), three significant digits, in T, G, M or k (whichever puts
    the value at 0.1 or more), so tiny-preset counts stay readable: 0.0148 G → 14.8 M."""
    if t is None:
        return DASH
    for scale, unit in ((1.0, "T"), (1e-3, "G"), (1e-6, "M")):
        if abs(t) >= 0.1 * scale or t == 0:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-9:.3g} k"


def fmt_score(x: float | None) -> str:
    """A quality figure (PPL, METEOR): four significant digits."""
    return DASH if x is None else f"{x:.4g}"


def fmt_pct(p: float | None) -> str:
    return DASH if p is None else f"{p:+.1f}%"


def delta_pct(value: float | None, base: float | None) -> float | None:
    """(value − base) / base × 100; None when either is missing, or the base alone is 0."""
    if value is None or base is None:
        return None
    if base == 0:
        return 0.0 if value == 0 else None  # e.g. generated KV bytes of prefill: nothing vs nothing
    return (value - base) / base * 100.0


def engineering_scale(values: Iterable[float | None], kind: str) -> tuple[float, str]:
    """(divisor, unit) that puts the largest |value| of `values` in a readable range.

    kind: "bytes" (B … GiB), "ms" (µs, ms, s) or "tera" (values in tera-units → T, G, M, k).
    """
    finite = [abs(v) for v in values if v is not None and v == v]
    top = max(finite, default=0.0)
    table = {"bytes": _BYTES, "ms": _MS, "tera": _TERA}[kind]
    for size, unit in table:
        if top >= size:
            return size, unit
    return table[-1]


def run_length(values: Sequence[Any] | None) -> str:
    """Per-layer lengths, run-length encoded: [640, 640, 179, 179] → '640×2 179×2'."""
    if not values:
        return DASH
    parts, i = [], 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        parts.append(f"{values[i]}×{j - i}" if j - i > 1 else str(values[i]))
        i = j
    return " ".join(parts)


_SHORT = {"prompt_len": "P", "gen_len": "g", "vision_keep": "v", "text_keep": "t", "batch": "b"}


def point_label(point: Mapping[str, Any], shown: Iterable[str] = ()) -> str:
    """'dynamic-llava kv-cache P=64 g=32 v=0.2 t=0.5' (+ the fields in `shown`, e.g. those that
    vary across a report)."""
    parts = [str(point.get("method")), str(point.get("mode"))]
    for f in ("prompt_len", "gen_len", "vision_keep", "text_keep"):
        v = point.get(f)
        if v is not None:
            parts.append(f"{_SHORT[f]}={v:g}" if isinstance(v, float) else f"{_SHORT[f]}={v}")
    if point.get("text_policy") == "learned":
        parts.append("learned")
    if point.get("method_options"):
        parts.append(options_label(point["method_options"]))
    if point.get("reuse_vision"):
        parts.append("reuse-vision")
    for f in shown:
        if f not in ("method", "mode", "prompt_len", "gen_len", "vision_keep", "text_keep", "method_options"):
            parts.append(f"{_SHORT.get(f, f)}={point.get(f)}")
    return " ".join(parts)


def md_cell(text: Any) -> str:
    """One Markdown table cell: backslashes and pipes escaped, newlines flattened."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None) -> str:
    """A GitHub-flavoured Markdown table (numeric columns right-aligned), ending with a newline."""
    numeric = numeric or [False] * len(headers)
    lines = ["| " + " | ".join(md_cell(h) for h in headers) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def options_label(options: Mapping[str, Any] | Iterable | None) -> str:
    """A plug-in method's options as shown: 'layers=8,16,24 ratio=0.5' ('' when it has none).
    Takes the record's mapping or the hashable ((name, value), …) form."""
    if not options:
        return ""
    items = options.items() if isinstance(options, Mapping) else options
    show = lambda v: ",".join(map(str, v)) if isinstance(v, list | tuple) else f"{v:g}" if isinstance(v, float) \
        else str(v)  # noqa: E731
    return " ".join(f"{name}={show(value)}" for name, value in items)


def method_of(row: Mapping[str, Any]):
    """The installed `method_api.Method` a row names, or None (a method not installed here: its
    rows are still shown, named by their keep ratios)."""
    from dynbench.registry import installed

    entry = installed().get(str(row.get("method")))
    return entry.method if entry is not None and entry.error is None else None


def params_label(row: Mapping[str, Any]) -> str | None:
    """A method's own parameters as its declaration names them (`Method.label_fields`): fastv
    'K2 R0.5', h2o 'KV 0.2'; None when it declares none or the first one is null."""
    method = method_of(row)
    fields = [(prefix, row.get(name), spec) for prefix, name, spec in (method.label_fields if method else ())]
    if not fields or fields[0][1] is None:
        return None
    return " ".join(f"{prefix}{format(value, spec)}" for prefix, value, spec in fields if value is not None)
