"""`dynbench merge`: one results folder from many (shards, re-runs on other machines), as if one
process had run the sweep — `report`, `plot` and `check` read the result like any run's.

Rules (`merge_folders`, in memory; `write_merged` writes them):
* **Points are de-duplicated by identity** (`records.POINT_KEY`). The winner is the last `ok` /
  `oom` summary of the point, folders taken in the order given and rows in file order; a point
  that never finished ok / oom keeps its last summary (its `error: …` shows in reports). Only a
  point row (`records.row_kind`) can win; the winner's other rows — steps, and a dataset point's
  round and sample rows (same `point_id`, same folder) — come with it in file order; every other
  row of the point — earlier attempts, a run or dataset cut short — is left out.
* **Disagreement is refused.** Two folders whose last `ok` summaries of one point ran in the same
  environment (`env_id`) must agree on the gate's exact metrics (`regress.checks.EXACT_METRICS`,
  compared by the gate's own exact check); otherwise `DynbenchError` (exit 2) names the point,
  the metric and both folders. Different environments may differ (another torch can count
  other FLOPs): the last one wins.
* **Environment snapshots** (`env/<env_id>.json`) are copied; for an id in several folders the
  first is kept (the fields that can differ — git SHA, CPU model — are outside the id).
* **Shards** (`shard.json`): shards or points missing from the merge are reported (`notes`),
  never silently passed; a shard folder with no records (a shard that got no point) is fine.

Writing (`write_merged`, under the target's writer lock): env files, `records.jsonl` and
`merged.json` (inputs, counts) each to a temp file, renamed together once all were written. An
existing `records.jsonl` in the target is refreshed only when the target is itself a merge (it
holds `merged.json`): its rows are then read as the first input, so a re-merge after a shard was
resumed keeps every point and drops nothing it had. A folder written by `dynbench run` is never
written over.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dynbench.errors import DynbenchError
from dynbench.folder_lock import folder_lock
from dynbench.records import is_point_summary, key_of
from dynbench.results import (
    RECORDS_FILE,
    RESUMABLE_STATUSES,
    env_snapshots,
    iter_records,
    jsonable,
    require_dynbench,
    writable_dir,
)
from dynbench.safe_io import write_together
from dynbench.shards import MANIFEST_FILE, point_digest, read_manifest

MERGED_FILE = "merged.json"


@dataclass
class Merged:
    rows: list[dict]  # de-duplicated, each point's step, round and sample rows, then its summary
    environments: dict[str, dict]  # env_id → snapshot
    inputs: list[str]
    points: int = 0
    dropped: int = 0  # rows left out: superseded attempts, steps without a summary
    notes: list[str] = field(default_factory=list)  # shards or points missing
    shards: list[dict] = field(default_factory=list)  # (folder, shard, of, sweep) of each shard input


def _folder(path: str | Path) -> Path:
    path = Path(path)
    return path.parent if path.name == RECORDS_FILE else path


def _read(folder: Path, strict: bool) -> list[dict]:
    if (folder / RECORDS_FILE).is_file():
        return require_dynbench(list(iter_records(folder, strict=strict)), folder / RECORDS_FILE)
    if (folder / MANIFEST_FILE).is_file():
        return []  # a shard that got no point of the sweep
    raise DynbenchError(f"no results at {folder / RECORDS_FILE}: pass folders written by `dynbench run --out DIR`")


def _snapshots(folder: Path) -> dict[str, dict]:
    return env_snapshots(folder) if (folder / "env").is_dir() else {}


def _exact_disagreement(a: dict, b: dict) -> str | None:
    """What the gate's exact checks find different between two ok summaries, or None."""
    from dynbench.regress.checks import REGRESSION, ExactCheck, default_checks

    for chk in default_checks():
        if isinstance(chk, ExactCheck):
            out = chk.evaluate(b, a)
            if out is not None and out.verdict == REGRESSION:
                return f"{chk.metric} {out.note}"
    return None


def merge_folders(paths: Sequence[str | Path], strict: bool = False) -> Merged:
    """Merge result folders (or their records.jsonl files) in memory (module docstring)."""
    from dynbench.report.format import point_label

    if not paths:
        raise DynbenchError("no results given: pass result folders or records.jsonl files")
    folders = list(dict.fromkeys(_folder(p).resolve() for p in paths))  # the same folder twice counts once
    per_folder = [_read(f, strict) for f in folders]
    # the winner of each point: (folder index, row index); ok/oom beats anything else
    winners: dict[tuple, tuple[int, int]] = {}
    finished: dict[tuple, bool] = {}
    last_ok: dict[tuple, dict[int, dict]] = {}  # point → folder → its last ok summary
    for fi, rows in enumerate(per_folder):
        for ri, row in enumerate(rows):
            if not is_point_summary(row):
                continue
            key = key_of(row)
            done = row.get("status") in RESUMABLE_STATUSES
            if done or not finished.get(key, False):
                winners.pop(key, None)  # re-insert: points ordered by their winner's write
                winners[key] = (fi, ri)
                finished[key] = finished.get(key, False) or done
            if row.get("status") == "ok":
                last_ok.setdefault(key, {})[fi] = row
    for by_folder in last_ok.values():
        seen: dict[str, tuple[int, dict]] = {}
        for fi, row in by_folder.items():
            env = str(row.get("env_id"))
            if env in seen:
                first_fi, first = seen[env]
                diff = _exact_disagreement(first, row)
                if diff:
                    raise DynbenchError(
                        f"{folders[first_fi]} and {folders[fi]} disagree on {point_label(row)} in the same "
                        f"environment {env}: {diff} — a bug or a changed checkout (git_sha "
                        f"{first.get('git_sha')} vs {row.get('git_sha')}); merge them separately or re-run one")
            else:
                seen[env] = (fi, row)
    by_pid: dict[tuple[int, str], list[dict]] = {}  # a point's step, round and sample rows
    for fi, rows in enumerate(per_folder):
        for row in rows:
            if not is_point_summary(row) and row.get("point_id") is not None:
                by_pid.setdefault((fi, str(row["point_id"])), []).append(row)
    out: list[dict] = []
    for fi, ri in sorted(winners.values()):
        summary = per_folder[fi][ri]
        pid = summary.get("point_id")
        out += by_pid.get((fi, str(pid)), []) if pid is not None else []
        out.append(summary)
    envs: dict[str, dict] = {}
    for f in folders:
        for env_id, snap in _snapshots(f).items():
            envs.setdefault(env_id, snap)
    merged = Merged(out, envs, [str(f) for f in folders], points=len(winners),
                    dropped=sum(map(len, per_folder)) - len(out))
    _check_shards(merged, folders, winners, per_folder, finished)
    return merged


def _check_shards(merged: Merged, folders, winners, per_folder, finished) -> None:
    """Notes on shards and points missing from the merge (by the shards' manifests)."""
    done = {point_digest(per_folder[fi][ri]) for key, (fi, ri) in winners.items() if finished[key]}
    sweeps: dict[str, dict] = {}
    for f in folders:
        m = read_manifest(f)
        if m is None:
            continue
        merged.shards.append({"folder": str(f), "shard": m["shard"], "of": m["of"], "sweep": m["sweep"]})
        sweeps.setdefault(m["sweep"], {"of": m["of"], "present": set()})["present"].add(m["shard"])
        missing = [d for d in m["points"] if d not in done]
        if missing:
            merged.notes.append(f"shard {m['shard']}/{m['of']} ({f}): {len(missing)} of its {len(m['points'])} "
                                "point(s) have no ok/oom row — resume it (`dynbench run … --shard "
                                f"{m['shard']}/{m['of']} --out {f} --resume`), then merge again")
    if len(sweeps) > 1:
        merged.notes.append(f"the shards come from {len(sweeps)} different sweeps (suite, flags or a resolved "
                            "--device auto differ): points may be missing or measured twice")
    for sweep in sweeps.values():
        absent = sorted(set(range(1, sweep["of"] + 1)) - sweep["present"])
        if absent:
            names = ", ".join(f"{k}/{sweep['of']}" for k in absent)
            merged.notes.append(f"shard(s) {names} of the sweep are not among the inputs")


def write_merged(paths: Sequence[str | Path], out: str | Path) -> Merged:
    """Merge `paths` into the folder `out` (module docstring: what may be written over), holding
    its writer lock; env snapshots, records and merged.json appear together or not at all."""
    target = writable_dir(out)
    with folder_lock(target):
        return _write_merged(paths, out, target)


def _write_merged(paths: Sequence[str | Path], out: str | Path, target: Path) -> Merged:
    inputs = [Path(p) for p in paths]
    before: list[str] = []
    if (target / RECORDS_FILE).exists():
        if not (target / MERGED_FILE).exists():
            raise DynbenchError(f"--out {out} holds {RECORDS_FILE} written by `dynbench run`, not by a merge: "
                                "merge into a new folder (pass this one as an input)")
        inputs = [target, *inputs]  # a refresh: what the target holds is the first (oldest) input
        try:
            before = list(json.loads((target / MERGED_FILE).read_text(encoding="utf-8")).get("inputs") or [])
        except (OSError, ValueError, AttributeError):
            before = []
    merged = merge_folders(inputs)
    files = {target / "env" / f"{env_id}.json": json.dumps(snap, indent=2, sort_keys=True) + "\n"
             for env_id, snap in merged.environments.items()}
    files[target / RECORDS_FILE] = "".join(json.dumps(jsonable(r), allow_nan=False) + "\n" for r in merged.rows)
    info = {"merged_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "inputs": list(dict.fromkeys([*before, *(i for i in merged.inputs if Path(i) != target.resolve())])),
            "points": merged.points,
            "rows": len(merged.rows), "shards": merged.shards, "notes": merged.notes}
    files[target / MERGED_FILE] = json.dumps(info, indent=1) + "\n"
    write_together(files)
    return merged
