"""Baseline files for the gate: a header (format, provenance, environments) + one summary row per point.

`write_baseline` stores the last summary row of every point of a results folder (raw latency
samples included) with the environments they ran in; `read_baseline` reads one back, refusing
anything that is not a whole dynbench baseline (a cut-short copy is an input error).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dynbench.errors import DynbenchError
from dynbench.records import BASELINE_ENV, POINT_KEY, env_fields, latest_summaries
from dynbench.regress.checks import STATUS_RANK
from dynbench.report.format import point_label
from dynbench.results import check_types, env_snapshots, iter_records, jsonable, require_dynbench, write_atomic

BASELINE_FORMAT = 1  # header field `dynbench_baseline`; bump when the file layout changes
# Environment fields a row may carry (`measure.env.snapshot` names); kept in the baseline header.
ENV_FIELDS = env_fields(BASELINE_ENV)


@dataclass(frozen=True)
class Baseline:
    """A baseline file: its header (environment, provenance) and one summary row per point."""

    header: dict
    rows: tuple[dict, ...]
    path: str | None = None

    @property
    def environments(self) -> dict[str, dict]:
        return dict(self.header.get("environments") or {})

    def describe(self) -> str:
        """One line for the CLI: what was stored."""
        throttled = sum(bool(r.get("throttled")) for r in self.rows)
        models = ", ".join(self.header.get("models") or []) or "?"
        envs = ", ".join(self.environments) or "?"
        note = f"; {throttled} throttled (their latencies will not be compared)" if throttled else ""
        return f"{len(self.rows)} points of {models}, env {envs}{note}"


def environments_of(rows: Iterable[Mapping[str, Any]],
                  extra: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict]:
    """env_id → environment fields: from `extra` (a snapshot per env id), then row columns."""
    envs: dict[str, dict] = {}
    for row in rows:
        env_id = row.get("env_id")
        env = envs.setdefault(env_id, {"env_id": env_id})
        if extra and env_id in extra:
            env.update({k: v for k, v in extra[env_id].items() if k in ENV_FIELDS})
        env.update({k: row[k] for k in ENV_FIELDS if k in row and k not in env})
    return {str(k): v for k, v in envs.items()}


def write_baseline(results_path: str | os.PathLike, out_path: str | os.PathLike, *,
                   environments: Mapping[str, Mapping[str, Any]] | None = None) -> Baseline:
    """Store the summary rows of a results folder as a baseline (JSON Lines, written atomically).

    Line 1 is the header: format version, creation time, source, git SHAs, model presets, point
    fields and `environments` (env_id → GPU, driver, CUDA, torch / transformers / fvcore versions,
    dtype, device, attn — from `environments`, else the run's `env/*.json` snapshots, then the
    row columns). Then one summary row per point (the last one, if a point was run again), raw
    latency samples included.
    Raises DynbenchError when there is no finished point or a point ended in an error.
    """
    records = require_dynbench(list(iter_records(results_path, strict=True)), results_path)
    rows = list(latest_summaries(records).values())
    if not rows:
        raise DynbenchError(f"{results_path} holds no finished point (no summary row): "
                            "run `dynbench run --out DIR` to completion first")
    failed = [r for r in rows if str(r.get("status", "ok")) not in STATUS_RANK]
    if failed:
        raise DynbenchError(
            f"{len(failed)} point(s) in {results_path} ended in an error (first: "
            f"{point_label(failed[0])}: {failed[0].get('status')}); fix them and run again "
            "(`dynbench run --resume`) before taking a baseline")
    header = {
        "dynbench_baseline": BASELINE_FORMAT,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": str(results_path),
        "git_sha": sorted({r["git_sha"] for r in rows if r.get("git_sha")}),
        "models": sorted({str(r.get("model")) for r in rows}),
        "point_fields": list(POINT_KEY),
        "points": len(rows),
        "environments": environments_of(rows, environments if environments is not None
                                      else env_snapshots(results_path)),
    }
    lines = [json.dumps(jsonable(header), allow_nan=False)]
    lines += [json.dumps(jsonable(r), allow_nan=False) for r in rows]
    write_atomic(out_path, "\n".join(lines) + "\n")
    return Baseline(header=header, rows=tuple(rows), path=str(out_path))


def read_baseline(path: str | os.PathLike) -> Baseline:
    """Read a file written by `write_baseline`; DynbenchError if it is not one."""
    if not Path(path).is_file():
        raise DynbenchError(f"no baseline at {path}: write one with "
                            "`dynbench baseline RESULTS --out results/baselines/NAME.jsonl`")
    records = iter(iter_records(path, strict=True, schema=False))  # the header is not a record
    header = next(records, None)
    if header is None or "dynbench_baseline" not in header:
        raise DynbenchError(f"{path} is not a dynbench baseline (no header line): write one with "
                            "`dynbench baseline RESULTS --out FILE`")
    if header["dynbench_baseline"] != BASELINE_FORMAT:
        raise DynbenchError(f"{path} has baseline format {header['dynbench_baseline']}, this "
                            f"dynbench reads format {BASELINE_FORMAT}: refresh the baseline")
    rows = tuple(records)
    if not rows:
        raise DynbenchError(f"{path} holds no points: refresh it with `dynbench baseline`")
    for lineno, row in enumerate(rows, start=2):
        check_types(row, path, lineno)
    require_dynbench(list(rows), path)
    return Baseline(header=header, rows=rows, path=str(path))
