#!/usr/bin/env bash
# One call on a lent GPU machine (no package index there): prove every measurement path
# (`dynbench doctor`), run the GPU CI suite, write its baseline and a report for review. What
# comes back (the device tool returns at most 8 files; this leaves 6 in $OUT):
#   doctor.json, doctor.md     every check: pass / fail / skip with details (doctor.json is rewritten
#                              after every check: a run cut short keeps what it proved)
#   gpu-check.log              nvidia-smi, versions, and everything the commands printed
#   report.md                  `dynbench report` of the suite (TTFT / TPOT / roofline ratio, host-bound labels)
#   ci-gpu.jsonl               the suite's baseline → review, then commit as results/baselines/ci-gpu.jsonl
#   ci-gpu.tar.gz              the suite's results folder (records.jsonl + env/)
# Usage (device tool): run(command="bash scripts/gpu-check.sh", timeout_s=540)
#   carry=[".whl"] (`make gpu-wheels`) only to count FLOPs there (FLOPS=1 or fvcore in .whl/): without
#   fvcore the suite runs --no-flops and the doctor's FLOP check skips.
#   QUICK=1: tiny shapes in the doctor; DOCTOR=0 / SKIP_SUITE=1: one half alone;
#   DOCTOR_ONLY=a,b: only those doctor checks (the rerun line printed at the end uses it).
#
# Time (one H200, estimated — nothing measured on a GPU yet): each phase runs under `timeout`, so
# the whole call is bounded whatever happens: doctor ≤ DOCTOR_S (default 240 s), suite ≤ SUITE_S
# (150 s), baseline + check + report ≤ 3 × 20 s, setup ≤ 30 s → ≤ 480 s = 8 min worst case, the
# default expected near 6 min. Estimate behind the budgets: a random-weight 7B bf16 build on the GPU
# ≈ 5–10 s (×6 in the doctor, ×2 in the suite); a 7B decode step is host-bound at ≈ 1,300 ops × ~4 µs
# ≈ 5–7 ms (launch count from `ops_per_step` at 7B depth on CPU), so the suite's 128-token kv-cache
# runs take ≈ 1 s each and its 22 prefill runs ≈ 2 s per point; the doctor's gate check runs
# 3 × 2 points of 48 tokens (≈ 10 s) and nvml-energy 10 × 32 tokens (≈ 3 s). A phase that hits its
# timeout is reported as failed, and the rerun line names it.
set -uo pipefail
OUT=${OUT:-results/gpu-check}
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
: > "$LOG"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >> "$LOG" 2>&1 || { echo "wheel install failed" | tee -a "$LOG" >&2; exit 3; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
DB=(python3 -m dynbench)
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
torch.cuda.get_device_name(), 'transformers', transformers.__version__)"
} 2>&1 | tee -a "$LOG"
FLOP_FLAG=(--no-flops)
if [ "${FLOPS:-}" = 1 ] || python3 -c "import fvcore" 2>/dev/null; then FLOP_FLAG=(--flops); fi
echo "FLOPs: ${FLOP_FLAG[*]} (fvcore $(python3 -c 'import fvcore' 2>/dev/null && echo present || echo absent))" | tee -a "$LOG"

failed_checks="" doctor_rc=0 suite_failed=0
step() {  # step SECONDS NAME CMD…: run under a timeout, log it, say how it ended
  local seconds=$1 name=$2; shift 2
  echo "== $name (≤ ${seconds} s): $*" | tee -a "$LOG"
  timeout --kill-after=10 "$seconds" "$@" >> "$LOG" 2>&1
  local rc=$?
  [ "$rc" = 124 ] && echo "== $name: timed out after ${seconds} s" | tee -a "$LOG"
  echo "== $name: exit $rc" | tee -a "$LOG"
  return "$rc"
}

if [ "${DOCTOR:-1}" = 1 ]; then
  step "${DOCTOR_S:-240}" doctor "${DB[@]}" doctor --out "$WORK/doctor" ${QUICK:+--quick} \
    ${DOCTOR_ONLY:+--only "$DOCTOR_ONLY"}
  doctor_rc=$?
  cp "$WORK/doctor/doctor.json" "$WORK/doctor/doctor.md" "$OUT/" 2>/dev/null
  failed_checks=$(python3 - "$WORK/doctor/doctor.json" <<'EOF' 2>/dev/null
import json, sys
print(",".join(c["name"] for c in json.load(open(sys.argv[1]))["checks"] if c["status"] == "fail"))
EOF
)
fi
if [ "${SKIP_SUITE:-0}" != 1 ]; then
  R="$WORK/ci-gpu"
  step "${SUITE_S:-150}" suite "${DB[@]}" run --suite suites/ci-gpu.yaml --out "$R" "${FLOP_FLAG[@]}" || suite_failed=1
  step 20 baseline "${DB[@]}" baseline "$R" --out "$OUT/ci-gpu.jsonl" || suite_failed=1
  step 20 check "${DB[@]}" check "$R" --baseline "$OUT/ci-gpu.jsonl" || suite_failed=1
  step 20 report "${DB[@]}" report "$R" --format md --wide > "$OUT/report.md" 2>> "$LOG" || suite_failed=1
  [ -d "$R" ] && tar -czf "$OUT/ci-gpu.tar.gz" -C "$WORK" ci-gpu
fi
rm -rf "$WORK"
# the one command that reruns what failed: the failed doctor checks (all of them after a timeout),
# and the suite only if it failed
rc=0 again=()
if [ "${DOCTOR:-1}" = 1 ] && [ "$doctor_rc" != 0 ]; then
  rc=1
  if [ -n "$failed_checks" ] && [ "$doctor_rc" != 124 ]; then again+=("DOCTOR_ONLY=$failed_checks"); fi
else
  again+=("DOCTOR=0")
fi
if [ "$suite_failed" = 1 ]; then rc=1; else again+=("SKIP_SUITE=1"); fi
[ "$rc" != 0 ] && echo "rerun what failed: ${again[*]} ${QUICK:+QUICK=1 }bash scripts/gpu-check.sh" | tee -a "$LOG"
ls -la "$OUT" | tee -a "$LOG"
exit "$rc"
