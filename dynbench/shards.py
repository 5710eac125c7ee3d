"""Deterministic shards of a sweep: which points `dynbench run --shard K/N` measures.

The rule (`partition`):
1. Each point costs its estimate from the counting rules (`estimate.point_tmacs`: MACs of every
   run, warm-ups included — a 4K no-cache point weighs what it costs, not one unit).
2. Points that build the same model (`records.MODEL_KEY`) form one unit of work, so that model is
   built once — unless the group alone costs more than a fair share (total / N): kept whole it
   would be the slowest shard, so each of its points becomes a unit (a shard still builds each
   model once: `sweep.order_points` runs a model's points together).
3. Greedy longest-processing-time: units by decreasing cost, ties by the sha256 of their key,
   each to the least-loaded shard (ties: the lowest K).

What it guarantees:
* every point of the sweep is in exactly one shard, and shard K of N is the same on any machine,
  under any PYTHONHASHSEED and whatever the order of the suite file: it depends only on the
  points' keys (hashed with sha256, never `hash()`) and their estimated costs;
* the slowest shard is within 4/3 of the best split of the same units (Graham's bound for LPT);
* adding a point cheaper than every unit, that splits no group and unsplits none, moves no other
  point. Any other change to the sweep may move points between shards (re-balancing): run every
  shard of a sweep from the same suite and flags. Each shard folder records its sweep's
  fingerprint and its points (`shard.json`); `--resume` refuses a folder of another sweep or
  shard, and `dynbench merge` names the shards and points that are missing.

A point's `--device auto` is resolved on the machine that expands the sweep: give the device
explicitly when shards run on different kinds of machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dynbench.errors import DynbenchError
from dynbench.records import MODEL_KEY, RESUME_KEY, key_of
from dynbench.results import write_atomic

MANIFEST_FILE = "shard.json"


@dataclass(frozen=True)
class Shard:
    index: int  # K, 1-based
    count: int  # N

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`--shard K/N` → Shard(K, N), 1 ≤ K ≤ N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise DynbenchError(f"--shard {text!r}: use K/N, e.g. --shard 2/4 (shard K of N, 1 ≤ K ≤ N)")
    k, n = int(match[1]), int(match[2])
    if not 1 <= k <= n:
        raise DynbenchError(f"--shard {text}: need 1 ≤ K ≤ N, e.g. --shard 1/{max(n, 1)}")
    return Shard(k, n)


def digest(value) -> str:
    """A stable hex digest of a key (a tuple of plain values): sha256 of its JSON."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def point_digest(row_or_spec) -> str:
    """The identity of a point (`records.POINT_KEY`) as a digest; same for a RunSpec and its rows."""
    return digest(key_of(row_or_spec))


def sweep_fingerprint(points: Sequence) -> str:
    """The sweep a shard belongs to: every field of every point, order-free."""
    return digest(sorted(digest(key_of(p, RESUME_KEY)) for p in points))


def _lpt(units: list[tuple[float, str, list]], n: int) -> list[list]:
    """Longest processing time: units (cost, tie key, points) by decreasing cost, ties by key,
    each into the least-loaded of n bins (ties: the lowest index)."""
    loads = [0.0] * n
    bins: list[list] = [[] for _ in range(n)]
    for cost, _, items in sorted(units, key=lambda u: (-u[0], u[1])):
        i = min(range(n), key=lambda j: (loads[j], j))
        loads[i] += cost
        bins[i].extend(items)
    return bins


def partition(points: Sequence, n: int, cost=None) -> list[list]:
    """The points of each of `n` shards (module docstring); each shard's points keep the sweep's
    order. `cost(point)` defaults to `estimate.point_tmacs`."""
    if cost is None:
        from dynbench.estimate import point_tmacs as cost
    costs = [float(cost(p)) for p in points]
    total = sum(costs)
    fair = total / n if n else math.inf
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault(key_of(p, MODEL_KEY), []).append(i)
    units = []
    for key, members in groups.items():
        group_cost = sum(costs[i] for i in members)
        if group_cost > fair and len(members) > 1:  # whole, it would be the bottleneck
            units += [(costs[i], point_digest(points[i]), [i]) for i in members]
        else:
            units.append((group_cost, digest(key), members))
    return [[points[i] for i in sorted(members)] for members in _lpt(units, n)]


def shard_points(points: Sequence, shard: Shard) -> list:
    return partition(points, shard.count)[shard.index - 1]


# ---- the manifest a shard leaves in its folder -------------------------------------------------
def manifest(points: Sequence, shard: Shard, mine: Sequence) -> dict:
    from dynbench.estimate import point_tmacs

    return {"shard": shard.index, "of": shard.count, "sweep": sweep_fingerprint(points),
            "sweep_points": len(points), "estimated_tmacs": sum(point_tmacs(p) for p in mine),
            "points": [point_digest(p) for p in mine]}


def read_manifest(folder: str | Path) -> dict | None:
    """`folder/shard.json`, or None when the folder is not a shard's."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DynbenchError(f"{path}: unreadable shard manifest ({exc}); delete it and resume the shard") from None
    if not isinstance(data, dict) or not {"shard", "of", "sweep", "points"} <= set(data):
        raise DynbenchError(f"{path} is not a dynbench shard manifest; delete it and resume the shard")
    return data


def write_manifest(folder: Path, data: dict, resume: bool) -> None:
    """Record which shard of which sweep `folder` holds; a resumed folder must hold the same one."""
    old = read_manifest(folder)
    if old is not None and (old["shard"], old["of"], old["sweep"]) != (data["shard"], data["of"], data["sweep"]):
        what = "another sweep" if old["sweep"] != data["sweep"] else f"shard {old['shard']}/{old['of']}"
        raise DynbenchError(f"--out {folder} holds {what} (its {MANIFEST_FILE}), not shard {data['shard']}/"
                            f"{data['of']} of this sweep: resume it with the flags it was started with, or "
                            "choose another folder")
    if old is None and resume and (folder / "records.jsonl").exists():
        raise DynbenchError(f"--out {folder} holds records of a run without --shard: choose another folder")
    write_atomic(folder / MANIFEST_FILE, json.dumps(data, indent=1) + "\n")
