#!/usr/bin/env bash
# The declared floor, tested: pyproject promises torch>=2.11 and transformers>=5.17, and the first GPU
# dynbench meets ships exactly Python 3.12 + torch 2.11.0 + transformers 5.17.0. This runs the fast tier
# in a second environment with that stack (PyPI's torch 2.11 wheel brings ~5 GB of CUDA libraries and
# runs on CPU here). The venv lives in .floor-venv/ (ignored) and is reused between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# a Python 3.12 that runs: a pyenv shim named python3.12 exists even where 3.12 is not selected
PY312="${FLOOR_PYTHON:-}"
if [ -z "$PY312" ]; then
  for candidate in python3.12 "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.12*/bin/python3.12; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      PY312=$candidate
      break
    fi
  done
fi
if [ -z "$PY312" ]; then
  echo "floor env: no Python 3.12 found (install one, or set FLOOR_PYTHON=/path/to/python3.12)" >&2
  exit 1
fi
VENV=.floor-venv
FLOOR_PINS=("torch==2.11.0" "transformers==5.17.0")
if [ ! -x "$VENV/bin/python" ]; then
  "$PY312" -m venv "$VENV"
fi
PY="$VENV/bin/python"
# reinstall only when the pins are not met (a reused venv costs seconds, a fresh one ~2 min)
if ! "$PY" -c "import torch, transformers, sys; sys.exit(not (torch.__version__.split('+')[0] == '2.11.0' and transformers.__version__ == '5.17.0'))" 2>/dev/null; then
  "$PY" -m pip install -q "${FLOOR_PINS[@]}"
fi
"$PY" -m pip install -q -e ".[dev]" "${FLOOR_PINS[@]}"
"$PY" -c "import sys, torch, transformers; print('floor stack: python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"
set +e
"$PY" -m pytest -q -m "not slow" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "floor env: pytest collected no tests (exit 5): failing" >&2
  exit 1
fi
exit "$rc"
