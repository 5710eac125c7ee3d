"""Presentation: everything that turns records into text or pictures, and nothing else.

`format` (units, Δ%, Markdown escaping — the only formatters), `compare` ("vs llava at the same
point" — the only comparison), `tables` and `paper` (terminal / Markdown / CSV tables), `check`
(the gate's report), `profile` (profiler tables), `columns` (the README's column list from the
schema), `plots` (charts). Nothing here measures anything; every number shown comes from a record.
Modules are imported where used, so `--help` stays light.
"""
