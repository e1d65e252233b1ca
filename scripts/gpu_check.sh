#!/usr/bin/env bash
# The GPU checks of issue 12, on a machine with an NVIDIA GPU and lipsync installed (pip install '.[cuda]'):
#   bash scripts/gpu_check.sh OUTDIR
# Writes to OUTDIR: doctor.json; the realistic bench on cuda:0 plain (no IO binding, no device graphs), with
# IO binding, with both, and with both and the feather blend (composited on the GPU), each with 1, 2 and 4
# renders in flight; alice with both; and the GPU tests' result when pytest is installed. Set LIPSYNC="python3 -m lipsync_cli" where the entry point is not on PATH.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$out"
lipsync=${LIPSYNC:-lipsync}
seconds=${SECONDS_OF_AUDIO:-8}
$lipsync doctor --json > "$out/doctor.json" 2> "$out/doctor.err"
run() {  # name, then bench arguments
    local name=$1; shift
    echo "== $name" | tee -a "$out/bench.txt"
    $lipsync bench --device cuda:0 --seconds "$seconds" --json "$out/$name.json" "$@" >> "$out/bench.txt" 2>&1 \
        || echo "bench $name failed: exit $?" | tee -a "$out/bench.txt"
}
run realistic-plain --model realistic --io-binding off --device-graphs off
run realistic-binding --model realistic --io-binding on --device-graphs off
run realistic-gpu-path --model realistic --io-binding on --device-graphs on
run realistic-gpu-path-feather --model realistic --blend feather  # composited on the device
run alice-gpu-path --character alice
if python3 -c "import pytest" 2>/dev/null; then
    python3 -m pytest -q -m gpu tests > "$out/pytest-gpu.txt" 2>&1; echo "pytest -m gpu: exit $?" >> "$out/pytest-gpu.txt"
fi
tail -n 3 "$out"/*.txt
