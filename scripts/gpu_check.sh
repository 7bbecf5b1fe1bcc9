#!/usr/bin/env bash
# The prepared GPU check (issue 9, item 6): one command for the day a CUDA machine is lent (an H200 for ~15
# minutes, no network, torch >= 2.11, nvcc, CuPy). It builds nucfast against the torch there, runs every
# CUDA test (the ones skipped on CPU machines: pytest -k cuda), the CUDA kernel benchmarks against CuPy's
# cupyx.scipy.ndimage where it has the op, and writes one report. At most ~8 minutes (each step has a
# timeout). Without a GPU it stops at once with exit code 2 and says why.
#   bash scripts/gpu_check.sh [OUT_DIR]        (default: $OUT if set, else gpu_check_out)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/report.md"
PY=${PYTHON:-python3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
note() { printf '%s\n' "$*" | tee -a "$REPORT"; }
: > "$REPORT"
note "# nucfast GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

if ! timeout 60 "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    note "no CUDA device visible to torch ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)): nothing to check"
    exit 2
fi
note "device: $("$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(p.name, f"{p.total_memory / 2**30:.0f} GiB", "torch", torch.__version__, "CUDA", torch.version.cuda)')"

note "## build (NUCFAST_CUDA=1, sm_90)"
t0=$(date +%s)
if NUCFAST_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} \
    timeout 300 "$PY" setup.py build_ext --inplace > "$OUT_DIR/build.log" 2>&1; then
    note "built in $(( $(date +%s) - t0 )) s"
else
    note "BUILD FAILED (exit $?) after $(( $(date +%s) - t0 )) s; last lines:"; tail -20 "$OUT_DIR/build.log" | tee -a "$REPORT"
    exit 1
fi
"$PY" -c 'import json, nucfast; i = nucfast.build_info(); print(json.dumps({k: i[k] for k in ("cuda_compiled", "cuda_archs", "ops_without_cuda", "cpu_only_ops")}))' 2>&1 | tee -a "$REPORT"

note "## CUDA tests (pytest -k cuda)"
timeout 180 "$PY" -m pytest tests -q -k cuda -p no:cacheprovider > "$OUT_DIR/pytest.log" 2>&1
note "pytest exit $?: $(tail -1 "$OUT_DIR/pytest.log")"
grep -E "^(FAILED|ERROR)" "$OUT_DIR/pytest.log" | head -40 | tee -a "$REPORT"

note "## CUDA benchmarks"
timeout 120 "$PY" scripts/gpu_bench.py "$OUT_DIR/bench.json" 2>&1 | tee -a "$REPORT"
note "done: $REPORT"
