"""Progress of a sweep: a rich bar with elapsed time and ETA on a terminal, one plain line per
finished point otherwise (CI logs show progress as it happens). The ETA weighs every point by its
estimated cost (`estimate.point_tmacs`): a 4K no-cache point is not one unit of work."""

from __future__ import annotations

import time

from dynbench.report.format import point_label


class SweepProgress:
    """`costs`: the estimated cost of each point still to run, in order; `done` of `total` points
    were recorded before (`--resume`)."""

    def __init__(self, costs: list[float], done: int, total: int, console):
        self.costs, self.console = [max(c, 1e-12) for c in costs], console
        self.done, self.total = done, total
        self._bar = None
        self._start = time.monotonic()
        self._ran = 0

    def __enter__(self) -> SweepProgress:
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[points]}"),
                       TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
            self._bar = Progress(*columns, console=self.console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task("running", total=sum(self.costs), points=self._points())
        return self

    def _points(self) -> str:
        return f"{self.done}/{self.total}"

    def point_done(self, row: dict) -> None:
        cost = self.costs[self._ran]
        self.done += 1
        self._ran += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=cost, description=point_label(row), points=self._points())
            return
        elapsed = time.monotonic() - self._start
        spent = sum(self.costs[: self._ran])
        left = elapsed * (sum(self.costs) - spent) / spent
        self.console.print(f"[{self.done}/{self.total}] {point_label(row)}: {row.get('status')} "
                           f"({elapsed:.0f} s elapsed, ~{left:.0f} s left)", highlight=False, markup=False)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __exit__(self, *exc) -> None:
        self.stop()
