"""Presentation: everything that turns records into text or pictures, and nothing else.

`format` (units, Δ%, Markdown escaping — the only formatters), `compare` ("vs llava at the same
point" — the only comparison), `tables` and `paper` (terminal / Markdown / CSV tables), `check`
(the gate's report), `profile` (profiler tables), `doctor`, `show` (what was kept: PNG, HTML,
JSON), `columns` (docs/records.md's column list from the schema), `plot_data` + `plot_panels` (pure
series and panel builders) and `plots` / `roofline_chart` (drawing). Nothing here measures
anything; every number shown comes from a record.
Modules are imported where used, so `--help` stays light.
"""
