#!/usr/bin/env bash
# One short check of everything that needs CUDA, for a lent GPU machine (about 5 minutes at most).
#
# Needs python3 with torch (CUDA), pytest and cuda-python or CuPy; installs nothing, needs no .venv
# (the package is used from the repository through PYTHONPATH). Steps, each with its own time limit:
#   0. pytest -m gpu test/test_gpu_core.py     (the inference core: fp32 parity, fp16 error, graphs, batches, custom op)
#   1. pytest -m gpu test/test_cuda_kernel.py  (kernel vs torch op: fp32/fp16, random configs, FlowNetC shapes)
#   2. the same FlowNetC checks through the CuPy launcher (FLOWNET2_CUDA_LAUNCHER=cupy), if CuPy is there
#   3. benchmark: fast vs tiled vs naive kernel vs torch op at FlowNetC shapes for 384x512 and 448x1024,
#      NCHW vs channels-last (NHWC) inputs read in place vs converted with copies,
#      then the inference core (FlowNet2 / thin FlowNet2S at 448x1024: eager vs CUDA graph, batch 1 and 4,
#      kernels per forward, GPU ms, peak memory)
#   4. compute-sanitizer memcheck and racecheck on small launches of every entry point, NCHW and NHWC
#      strides (if available)
# Results go to $OUT (or out/gpu_check): logs, pytest junit XML and benchmark.json.
# Usage: bash scripts/gpu_check.sh        Exit status: that of the pytest step (1) or the benchmark (3).
# TensorRT engines (export, build, load, compare with torch) need TensorRT too: scripts/trt_first_run.sh.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
out="${OUT:-$root/out/gpu_check}"
mkdir -p "$out"
py="${PYTHON:-python3}"
status=0

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/machine.txt"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())" \
  2>&1 | tee -a "$out/machine.txt"

for shared in "$root/../shared" "$root/shared"; do
  if [ -f "$shared/reference/vectors_ops.npz" ]; then export FLOWNET2_SHARED=${FLOWNET2_SHARED:-$shared}; break; fi
done
echo "== 0. inference core on the GPU"
timeout 150 "$py" -m pytest -q -s -p no:cacheprovider -m gpu test/test_gpu_core.py \
  --junitxml="$out/pytest_core.xml" 2>&1 | tee "$out/pytest_core.log" | grep -E "error|passed|failed|skipped|FAIL"
core_status=${PIPESTATUS[0]}

echo "== 1. gpu tests (cuda-python launcher)"
timeout 150 "$py" -m pytest -q -p no:cacheprovider -m gpu test/test_cuda_kernel.py \
  --junitxml="$out/pytest_gpu.xml" 2>&1 | tee "$out/pytest_gpu.log"
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && status=$core_status

echo "== 2. FlowNetC checks through CuPy"
if "$py" -c "import cupy" 2>/dev/null; then
  FLOWNET2_CUDA_LAUNCHER=cupy timeout 60 "$py" -m pytest -q -p no:cacheprovider -m gpu test/test_cuda_kernel.py \
    -k "flownetc_shapes or side_stream" 2>&1 | tee "$out/pytest_cupy.log"
else
  echo "CuPy not installed: skipped" | tee "$out/pytest_cupy.log"
fi

echo "== 3. benchmark"
timeout 120 "$py" scripts/gpu_check.py bench --out "$out/benchmark.json" 2>&1 | tee "$out/benchmark.log"
bench=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && status=$bench
timeout 150 "$py" scripts/gpu_check.py core --out "$out/core.json" 2>&1 | tee "$out/core.log"
bench=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && status=$bench

echo "== 4. compute-sanitizer"
if command -v compute-sanitizer >/dev/null 2>&1; then
  for tool in memcheck racecheck; do
    # --report-api-errors no: the driver bindings probe cuGetProcAddress, which is not a kernel fault
    timeout 60 compute-sanitizer --tool "$tool" --report-api-errors no --error-exitcode 3 \
      "$py" scripts/gpu_check.py sanitize \
      >"$out/sanitizer_$tool.log" 2>&1
    echo "$tool: exit $? (0 clean, 3 errors found, 124 timeout; log sanitizer_$tool.log)"
    tail -n 3 "$out/sanitizer_$tool.log"
  done
else
  echo "compute-sanitizer not on PATH: skipped"
fi
exit "$status"
