"""Keep the profiler's native chatter off the terminal.

kineto (torch.profiler's backend) prints `USDT: … profiler_start / profiler_stop` lines to file
descriptor 2 from C++, so `sys.stderr` redirection does not catch them and they would land in
front of `--json` output and in CI logs. `profiler_stderr_filtered()` points fd 2 at a temporary
file while the profiler runs, then writes back every line that is not kineto's.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

KINETO_PREFIXES = ("USDT:",)


@contextmanager
def profiler_stderr_filtered() -> Iterator[None]:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreter): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except ValueError:
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not line.startswith(KINETO_PREFIXES)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
