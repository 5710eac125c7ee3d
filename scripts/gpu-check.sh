#!/usr/bin/env bash
# One call on a lent GPU machine (no package index there): install what it lacks from the wheels
# in .whl/ (`make gpu-wheels` fills it; carry `.whl`), prove every measurement path
# (`dynbench doctor`), run the GPU CI suite and write its baseline for review. Everything lands in
# $OUT (at most 8 files come back from the device tool):
#   doctor/doctor.json, doctor/doctor.md   every check: pass / fail / skip, with details
#   doctor.log, ci-gpu.log                 what the commands printed
#   ci-gpu/records.jsonl                   the suite's rows
#   ci-gpu.jsonl                           its baseline → review, then commit as results/baselines/ci-gpu.jsonl
#   nvidia-smi.txt                         the card, driver and memory
# Usage (device tool): run(command="bash scripts/gpu-check.sh", carry=[".whl"], timeout_s=590)
#   QUICK=1 for tiny shapes in the doctor (seconds); SKIP_SUITE=1 to run the doctor alone.
# Expected on one H100/H200 (not measured yet): the doctor ~4-6 min with 7B shapes, ~1 min with
# QUICK=1; the suite ~3-5 min. One 10-minute call fits QUICK=1 + the suite, or the full doctor
# alone (SKIP_SUITE=1); a second call can run the other (DOCTOR=0 for the suite alone).
set -uo pipefail
OUT=${OUT:-results/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed" >&2; exit 3; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
DB=(python3 -m dynbench)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())" \
  >> "$OUT/nvidia-smi.txt" 2>&1
cat "$OUT/nvidia-smi.txt"
rc=0
if [ "${DOCTOR:-1}" = 1 ]; then
  "${DB[@]}" doctor --out "$OUT/doctor" ${QUICK:+--quick} 2>&1 | tee "$OUT/doctor.log"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
fi
if [ "${SKIP_SUITE:-0}" != 1 ]; then
  "${DB[@]}" run --suite suites/ci-gpu.yaml --out "$OUT/ci-gpu" 2>&1 | tee "$OUT/ci-gpu.log"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  "${DB[@]}" baseline "$OUT/ci-gpu" --out "$OUT/ci-gpu.jsonl" 2>&1 | tee -a "$OUT/ci-gpu.log" || rc=1
  "${DB[@]}" check "$OUT/ci-gpu" --baseline "$OUT/ci-gpu.jsonl" 2>&1 | tee -a "$OUT/ci-gpu.log" || rc=1
fi
exit "$rc"
