"""Importing this module registers every command on the app (kept apart so `app.py` stays small)."""

from dynbench.cli import run, cluster, report, gate, profile, show, doctor, info, methods  # noqa: F401, I001 — help lists them in this order
