"""Progress of a sweep: a rich bar with elapsed time and ETA on a terminal, one plain line per
finished point otherwise (CI logs show progress as it happens)."""

from __future__ import annotations

import time

from dynbench.report.format import point_label


class SweepProgress:
    def __init__(self, total: int, done: int, console):
        self.total, self.done, self.console = total, done, console
        self._bar = None
        self._start = time.monotonic()
        self._ran = 0

    def __enter__(self) -> SweepProgress:
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
            self._bar = Progress(*columns, console=self.console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task("running", total=self.total, completed=self.done)
        return self

    def point_done(self, row: dict) -> None:
        self.done += 1
        self._ran += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=point_label(row))
            return
        elapsed = time.monotonic() - self._start
        left = (self.total - self.done) * elapsed / self._ran
        self.console.print(f"[{self.done}/{self.total}] {point_label(row)}: {row.get('status')} "
                           f"({elapsed:.0f} s elapsed, ~{left:.0f} s left)", highlight=False, markup=False)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __exit__(self, *exc) -> None:
        self.stop()
