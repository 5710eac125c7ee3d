"""Results store: plain, append-only JSON Lines (one flat JSON object per line).

A results folder holds `records.jsonl` (the columns are declared in `records.py`) and `env/`
(one environment snapshot per `env_id`). Rows are never rewritten: a point run again (e.g. after
an `error`) is appended again, and readers take the last summary row of a point
(`records.latest_summaries`). NaN and ±inf are written as null (strict JSON).

Durability (`safe_io`, `folder_lock`): one writer per folder (an advisory lock held for a run's
lifetime); `append_record` issues one write + fsync per row, cut back on failure, so a crash can
only leave a truncated last line; `iter_records` skips it with a warning (or refuses it,
`strict`, for the gate) and the next writer to take the folder's lock cuts it off. Whole files
(baselines, reports) go through `write_atomic` (temp file + fsync + rename).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynbench.errors import DynbenchError
from dynbench.folder_lock import folder_lock, holds
from dynbench.names import STATUS_OK, STATUS_OOM
from dynbench.records import is_point_summary, key_of, validate
from dynbench.safe_io import append_line, write_atomic  # noqa: F401 — write_atomic: re-exported

if TYPE_CHECKING:
    import pandas as pd

RECORDS_FILE = "records.jsonl"
RESUMABLE_STATUSES = (STATUS_OK, STATUS_OOM)  # `--resume` skips these; "error: …" points run again
DYNBENCH_REQUIRED = ("method", "mode", "status")  # every row dynbench writes names these


def jsonable(value: Any) -> Any:
    """Plain JSON types only: non-finite floats -> None, tuples -> lists, numpy/torch -> Python."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return jsonable(value.tolist())
    raise TypeError(f"cannot store {type(value).__name__} in a record: {value!r}")


def append_record(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one record as one JSON line (`safe_io.append_line`: one write, fsync; cut back on
    failure). The folder's writer lock is held for the append — the caller's (a run holds it for
    its lifetime), or taken for this one append; its first taker repaired a torn last line."""
    path = Path(path)
    line = (json.dumps(jsonable(record), allow_nan=False) + "\n").encode("utf-8")
    if holds(path.parent):
        append_line(path, line)
        return
    writable_dir(path.parent, flag="results folder")
    with folder_lock(path.parent, brief=True):
        append_line(path, line)


def _records_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    file = path / RECORDS_FILE if path.is_dir() else path
    if not file.is_file():
        raise DynbenchError(f"no results at {file}: pass a {RECORDS_FILE} file or a folder "
                            "written by `dynbench run --out DIR`")
    return file


def iter_records(path: str | os.PathLike, strict: bool = False, schema: bool = True) -> Iterator[dict]:
    """Raw records from a records.jsonl file or a folder holding one.

    A corrupt last line is skipped with a warning (a crash mid-write) — or, with `strict` (the
    regression gate, which must not judge a run that was cut short), raises DynbenchError; a
    corrupt line followed by more records means the file was damaged otherwise, and raises. With
    `schema`, a declared column of the wrong type raises too (`check_types`).
    """
    file = _records_file(path)
    bad: tuple[int, str] | None = None  # (line number, reason) of an unparsable line
    with open(file, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if bad is not None:
                raise DynbenchError(f"{file}:{bad[0]}: corrupt record ({bad[1]}); fix or delete "
                                    "that line")
            try:
                record = json.loads(line)  # bytes: a broken UTF-8 sequence is a ValueError too
            except ValueError as exc:
                bad = (lineno, str(exc))
                continue
            if not isinstance(record, dict):
                bad = (lineno, f"expected a JSON object, got {type(record).__name__}")
                continue
            if schema:
                check_types(record, file, lineno)
            yield record
    if bad is not None:
        if strict:
            raise DynbenchError(f"{file}:{bad[0]}: the last record is truncated or unreadable ({bad[1]}) — "
                                "the run was cut short: finish it with `dynbench run … --resume`, "
                                "or remove that line")
        warnings.warn(f"{file}:{bad[0]}: skipped a truncated last record ({bad[1]})",
                      RuntimeWarning, stacklevel=2)


def check_types(record: dict, file: str | os.PathLike, lineno: int) -> None:
    """A declared column of the wrong type (`records.validate`) is one line naming file, line and
    column — not a crash in a report later. Undeclared columns pass (another version's records)."""
    wrong = [p for p in validate(record) if ", expected " in p]
    if wrong:
        raise DynbenchError(f"{file}:{lineno}: column {wrong[0][:200]}; fix or delete that line")


def require_dynbench(records: list[dict], file: str | os.PathLike) -> list[dict]:
    """`records` if they are dynbench rows (each names its method, mode and status), else one line."""
    for i, r in enumerate(records):
        missing = [c for c in DYNBENCH_REQUIRED if not isinstance(r.get(c), str)]
        if missing:
            raise DynbenchError(f"{file}: record {i + 1} is not a dynbench record (no {', '.join(missing)}); pass a "
                                "folder written by `dynbench run --out DIR`")
    return records


def load(path: str | os.PathLike) -> pd.DataFrame:
    """All records as a DataFrame (list columns stay Python lists; nulls become None/NaN)."""
    import pandas as pd  # heavy: only when a table is needed

    records = list(iter_records(path))
    if not records:
        raise DynbenchError(f"{_records_file(path)} holds no records: run `dynbench run` first")
    return pd.DataFrame.from_records(records)


def env_snapshots(results_path: str | os.PathLike) -> dict[str, dict]:
    """env_id → snapshot from the `env/<env_id>.json` files a run writes beside its records."""
    folder = Path(results_path)
    folder = folder if folder.is_dir() else folder.parent
    snaps = {}
    for file in sorted((folder / "env").glob("*.json")):
        try:
            snap = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a damaged snapshot only loses detail: rows carry the key fields
        if isinstance(snap, dict):
            snaps[str(snap.get("env_id") or file.stem)] = snap
    return snaps


def recorded_keys(path: str | os.PathLike, fields: Iterable[str]) -> set[tuple]:
    """Keys of points whose summary row (step null) has status ok/oom; empty if no results yet.

    Step rows alone do not count: a point interrupted before its summary row runs again. Nor do a
    dataset point's sample rows: a point cut short before its aggregate runs again, every sample.
    """
    file = Path(path) / RECORDS_FILE if Path(path).is_dir() else Path(path)
    if not file.exists():
        return set()
    fields = tuple(fields)
    return {key_of(r, fields) for r in iter_records(file)
            if is_point_summary(r) and r.get("status") in RESUMABLE_STATUSES}


def load_many(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """All records from result folders or `records.jsonl` files, in the order given.

    Raises DynbenchError (one line naming the file) for a missing, empty or corrupt file, or one
    that is not dynbench records. A truncated last line alone is skipped with a warning.
    """
    if not paths:
        raise DynbenchError("no results given: pass result folders or records.jsonl files")
    import pandas as pd

    frames = [_load_one(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _load_one(path: str | os.PathLike) -> pd.DataFrame:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            df = load(path)
        except DynbenchError as exc:
            skipped = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
            if skipped:  # the only line(s) could not be parsed: corrupt, not merely empty
                raise DynbenchError(
                    f"{skipped[0].replace('skipped a truncated last record', 'corrupt record')} and no "
                    "valid record before it: fix the file or run `dynbench run --out DIR` again"
                ) from exc
            raise
    for w in caught:  # pass on what the loader said (e.g. a skipped truncated last line)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    missing = [c for c in ("method", "mode") if c not in df.columns]
    if missing:
        raise DynbenchError(f"{path}: not dynbench records (no {', '.join(missing)} column); "
                            "pass a folder written by `dynbench run --out DIR`")
    if "step" not in df.columns:
        df["step"] = None
    return df


def writable_dir(out_dir: str | os.PathLike, flag: str = "--out") -> Path:
    """`out_dir`, created if needed, after checking a file can be written there (DynbenchError
    naming `flag` otherwise: a path through a file, no permission, a read-only disk)."""
    path = Path(out_dir).expanduser()
    try:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            where = "it is a file" if blocker == path else f"{blocker} is a file"
            raise DynbenchError(f"{flag} {path}: {where}; give a directory path (it is created if missing)")
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".dynbench-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DynbenchError(
            f"{flag} {path}: cannot write there ({e.strerror or e}); choose a writable directory"
        ) from None
    return path
