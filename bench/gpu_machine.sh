#!/bin/sh
# The checks that need a GPU, in one run, for a GPU machine lent for a few minutes (docs/performance.md).
#
#   bench/gpu_machine.sh [OUT_DIR]        # from the repository root; PYTHON=... to pick the interpreter
#
# 1. the GPU and host the checks ran on (nvidia-smi, cores, versions);
# 2. the real-NVML tests (tests/exporter/test_real_gpu.py and the collector's tests) with TRAINMON_REQUIRE_GPU=1,
#    so a machine without a usable GPU or CUDA torch fails instead of skipping;
# 3. bench/gpu_overhead.py: steps/s with monitoring off / 1 Hz / 5 s, and GpuCollector.tick() per GPU on NVML;
#    bench/gpu_scrape.py: the GPU series of one scrape idle and one under load (OUT_DIR/scrape_*.txt);
# 4. with the metadata API installed (trainmon[server]), the CPU-bound benches on this host's cores as well:
#    bench/shipping_cost.py (200 us steps) and bench/api_request_cost.py.
# Each step's output goes to OUT_DIR/<step>.txt (8 files in all, with the two scrapes); a failing step does not
# stop the others; the exit status is the number of failed steps.
set -u
out=${1:-${OUT:-gpu-machine-out}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
python=$(command -v "${PYTHON:-python3}") || { echo "no ${PYTHON:-python3}"; exit 1; }
python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python")
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)  # monitors with no API record runs in ./trainmon-runs: not in the checkout
export PYTHONUNBUFFERED=1 TRAINMON_REQUIRE_GPU=1 PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
failed=0

step() {  # step NAME COMMAND...: run in $work, output to $out/NAME.txt and the terminal
    name=$1
    shift
    echo "== $name: $*"
    started=$(date +%s)
    (cd "$work" && "$@") >"$out/$name.txt" 2>&1
    status=$?
    cat "$out/$name.txt"
    echo "== $name: exit $status after $(($(date +%s) - started)) s"
    [ "$status" -eq 0 ] || failed=$((failed + 1))
}

step machine sh -c "nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm \
--format=csv && nproc && grep -m1 'model name' /proc/cpuinfo && $python -c 'import sys, torch, pynvml; \
print(sys.version.split()[0], torch.__version__, pynvml.nvmlSystemGetDriverVersion() if not pynvml.nvmlInit() else \"\")'"
step tests "$python" -m pytest -q -p no:cacheprovider --rootdir "$repo" -c "$repo/pyproject.toml" \
    "$repo/tests/exporter/test_real_gpu.py" "$repo/tests/exporter/test_gpu_collector.py"
step gpu_overhead "$python" "$repo/bench/gpu_overhead.py"
step gpu_scrape "$python" "$repo/bench/gpu_scrape.py" "$out"
if "$python" -c "import trainmon.metadata_api.app, uvicorn" 2>/dev/null; then
    step shipping_cost "$python" "$repo/bench/shipping_cost.py" --step-us 200 --rounds 5 --calls 30000
    step api_request_cost "$python" "$repo/bench/api_request_cost.py" --rounds 3
else
    echo "== the metadata API is not installed here (pip install 'trainmon[server]'): CPU benches left out"
fi
rm -rf "$work"
echo "== $failed step(s) failed; outputs in $out"
exit "$failed"
