#!/usr/bin/env bash
# The first run of the TensorRT path on a machine that has TensorRT and a GPU, in one command.
#
# Nothing in this project's CI can build or run a TensorRT engine; this script does all of it once and
# prints a table to paste into a bug report or a closing note. In order, stopping at the first failure
# with a one-line reason:
#   1. environment: TensorRT (full), torch with CUDA, the correlation kernel compiled and loaded for this
#      GPU (cuda-bindings, NVRTC, driver versions)
#   2. export FlowNet2C and FlowNet2 (thin, random weights, seed 0) with a dynamic batch, fp32 and fp16;
#      with --checkpoint also that (full) checkpoint
#   3. build an engine of each with the batch profile 1:2:4 (flownet2-build-engine, shared timing cache)
#   4. load each engine in a fresh process and compare its flow with the torch backend (fp32) on the demo
#      sequence's pairs at batch 1, 4 and 6 (6 = a run of 4 and one of 2), also replayed from CUDA graphs;
#      time batch 1 and batch 4
#   5. print the pass/fail table (also written to OUT/summary.md)
# Without TensorRT it says so and exits 0 at once. Installs nothing; runs from the repository (PYTHONPATH).
#
# Usage: bash scripts/trt_first_run.sh [--checkpoint FlowNet2_checkpoint.pth.tar] [--size WxH] [--out DIR]
#        bash scripts/trt_first_run.sh --dry-run     (print the steps, run nothing)
# Exit status: 0 all passed (or no TensorRT here), 1 a step failed, 2 bad arguments.
set -uo pipefail

usage() {
  sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<'EOF'
Options:
  --checkpoint PATH  also export, build and check this checkpoint (e.g. FlowNet2_checkpoint.pth.tar)
  --size WxH         network input size, multiples of 64 (default 512x384)
  --batch MIN:OPT:MAX  batch profile of the engines (default 1:2:4)
  --out DIR          where ONNX files, engines, logs and the table go (default $OUT or out/trt_first_run)
  --dry-run          print the steps without running them
  -h, --help         this text
Environment: PYTHON (default python3), STEP_TIMEOUT seconds per step (default 3600).
EOF
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py="${PYTHON:-python3}"
out="${OUT:-$root/out/trt_first_run}"
size=512x384
batch=1:2:4
checkpoint=""
dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --checkpoint) checkpoint="${2:-}"; shift 2 || { usage >&2; exit 2; } ;;
    --size) size="${2:-}"; shift 2 || { usage >&2; exit 2; } ;;
    --batch) batch="${2:-}"; shift 2 || { usage >&2; exit 2; } ;;
    --out) out="${2:-}"; shift 2 || { usage >&2; exit 2; } ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "trt_first_run: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if ! [[ "$size" =~ ^[0-9]+x[0-9]+$ ]]; then echo "trt_first_run: --size must be WxH, got $size" >&2; exit 2; fi
if ! [[ "$batch" =~ ^[0-9]+:[0-9]+:[0-9]+$ ]]; then
  echo "trt_first_run: --batch must be MIN:OPT:MAX, got $batch" >&2; exit 2
fi
if [ -n "$checkpoint" ] && [ "$dry" -eq 0 ] && [ ! -f "$checkpoint" ]; then
  echo "trt_first_run: checkpoint $checkpoint not found" >&2; exit 2
fi
[ -n "$checkpoint" ] && checkpoint=$(cd "$(dirname "$checkpoint")" && pwd)/$(basename "$checkpoint")

# The engines: name|export arguments|check arguments
engines=()
for precision in fp32 fp16; do
  for stack in FlowNet2C FlowNet2; do
    engines+=("${stack}_thin_${precision}|--model $stack --random-weights --thin --precision $precision|--model $stack --thin")
  done
  if [ -n "$checkpoint" ]; then
    engines+=("checkpoint_${precision}|--checkpoint $checkpoint --precision $precision|--checkpoint $checkpoint")
  fi
done

if [ "$dry" -eq 1 ]; then
  echo "steps (--dry-run: nothing is run; outputs under $out):"
  echo "  1. environment: TensorRT, torch CUDA, prepare_kernel(0) (correlation kernel for this GPU)"
  n=2
  for entry in "${engines[@]}"; do
    IFS='|' read -r name export_args check_args <<<"$entry"
    precision=${name##*_}
    echo "  $n. export $name: $py -m flownet2_ros.cli.export_onnx $export_args --input-size $size --dynamic-batch -o $out/onnx/$name.onnx"
    echo "     build  $name: $py -m flownet2_ros.cli.build_engine --onnx $out/onnx/$name.onnx --precision $precision --batch $batch --timing-cache $out/timing.cache --no-progress -o $out/engines/$name.engine"
    echo "     check  $name (fresh process): $py $out/trt_first_run_check.py check --engine $out/engines/$name.engine $check_args --precision $precision"
    n=$((n + 1))
  done
  echo "  $n. table: $out/summary.md"
  exit 0
fi

# Fast exit without TensorRT (well under a second: no torch import).
if ! "$py" -c 'import importlib.util as u, sys; sys.exit(0 if u.find_spec("tensorrt") else 3)' 2>/dev/null; then
  echo "trt_first_run: TensorRT is not installed for $py (import tensorrt fails): nothing to run here. Run this on a machine with TensorRT (JetPack 6, or NVIDIA's tensorrt wheels) and a GPU."
  exit 0
fi

cd "$root" || exit 1
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
mkdir -p "$out/onnx" "$out/engines" "$out/logs" "$out/results"
rm -f "$out/steps.tsv" "$out/results/"*.json
checker="$out/trt_first_run_check.py"
step_timeout="${STEP_TIMEOUT:-3600}"

# ------------------------------------------------------------------------------------- the checker
cat >"$checker" <<'PYEOF'
"""trt_first_run's Python side: env | check | table (written by scripts/trt_first_run.sh)."""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def fail(message):
    print(f"FAILED: {' '.join(str(message).split())}")
    sys.exit(1)


def env(args):
    import torch

    try:
        import tensorrt as trt
    except Exception as exc:
        fail(f"import tensorrt: {exc}")
    from flownet2_ros.export.engine_builder import builder_unavailable_reason

    reason = builder_unavailable_reason(trt)
    if reason:
        fail(reason)
    if not torch.cuda.is_available():
        fail(f"torch {torch.__version__} sees no CUDA GPU (a CPU-only torch wheel?)")
    from flownet2_ros.ops.cuda_correlation import CudaCorrelationError, prepare_kernel

    try:
        status = prepare_kernel(0)
    except CudaCorrelationError as exc:
        fail(exc)
    lines = [
        f"GPU: {torch.cuda.get_device_name(0)} (sm {'.'.join(map(str, torch.cuda.get_device_capability(0)))})",
        f"TensorRT {trt.__version__}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
        f"Python {sys.version.split()[0]}",
        status.summary(),
    ]
    Path(args.out, "environment.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def frames():
    import cv2

    from flownet2_ros.flowio.demo_sequence import demo_sequence_dir

    paths = sorted(demo_sequence_dir().glob("frame_*.png"))[:7]
    if len(paths) < 7:
        fail(f"demo sequence incomplete in {demo_sequence_dir()}")
    return [np.ascontiguousarray(cv2.imread(str(p), cv2.IMREAD_COLOR)[:, :, ::-1]) for p in paths]


def reference_model(args, meta):
    import torch

    from flownet2_ros.export.onnx_export import state_dict_sha256
    from flownet2_ros.models import build, load_checkpoint

    if args.checkpoint:
        model = load_checkpoint(args.checkpoint)
    else:
        torch.manual_seed(0)  # as flownet2-export-onnx --random-weights
        model = build(args.model, thin=args.thin, width=1.0)
    if meta.source_kind == "weights" and state_dict_sha256(model) != meta.source_sha256:
        fail("the torch reference's weights differ from those the engine was exported from")
    return model


def torch_reference(model, size):
    from flownet2_ros.backends.torch_backend import TorchFlowEstimator

    try:
        return TorchFlowEstimator(model, "cuda", network_size=size, precision="fp32")
    except TypeError:  # an older signature
        return TorchFlowEstimator(model, "cuda", network_size=size, fp16=False)


def median_ms(fn, repeats=20):
    import torch

    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def check(args):
    from flownet2_ros.backends import FlowRequest
    from flownet2_ros.backends.tensorrt_backend import TensorRTFlowEstimator
    from flownet2_ros.export.engine_metadata import read_metadata

    result = {"name": args.name, "precision": args.precision, "passed": False}
    out_file = Path(args.json)
    meta = read_metadata(args.engine)
    result.update(batch=str(meta.batch_profile), stack=meta.stack)
    start = time.perf_counter()
    trt_est = TensorRTFlowEstimator(args.engine, "cuda")
    result["load_s"] = round(time.perf_counter() - start, 2)
    if str(trt_est.batch_profile) != args.batch:
        fail(f"engine batch profile {trt_est.batch_profile}, expected {args.batch}")
    model = reference_model(args, meta)
    ref = torch_reference(model, (meta.input_height, meta.input_width))
    images = frames()
    pairs = [(images[i], images[i + 1]) for i in range(6)]
    want = [ref.estimate(a, b).copy() for a, b in pairs]
    scale = float(np.mean([np.abs(w).mean() for w in want]))
    rel, absolute = (0.01, 0.01) if args.precision == "fp32" else (0.05, 0.05)
    limit = rel * scale + absolute
    result.update(flow_mean_abs_px=round(scale, 4), limit_px=round(limit, 4))

    def compare(label, got, expected):
        diffs = [np.abs(g - w) for g, w in zip(got, expected, strict=True)]
        mean = float(np.mean([d.mean() for d in diffs]))
        peak = float(max(d.max() for d in diffs))
        result[f"{label}_mean_px"], result[f"{label}_max_px"] = round(mean, 4), round(peak, 4)
        if not np.isfinite(mean) or mean > limit:
            out_file.write_text(json.dumps(result))
            fail(f"{args.name}: {label} mean |TensorRT - torch| {mean:.4f} px > {limit:.4f} px")

    requests = [FlowRequest(a, b, key1=i, key2=i + 1) for i, (a, b) in enumerate(pairs)]
    compare("b1", [trt_est.estimate(a, b, key1=i, key2=i + 1).copy() for i, (a, b) in enumerate(pairs)], want)
    compare("b4", [f.copy() for f in trt_est.estimate_batch(requests[:4])], want[:4])
    compare("b6", [f.copy() for f in trt_est.estimate_batch(requests)], want)
    eager = [f.copy() for f in trt_est.estimate_batch(requests[:4])]
    eager_single = trt_est.estimate(*pairs[0]).copy()
    graphs = TensorRTFlowEstimator(args.engine, "cuda", cuda_graph=True)
    for _ in range(3):  # eager, capture, replay
        replayed = [f.copy() for f in graphs.estimate_batch(requests[:4])]
        single = graphs.estimate(*pairs[0]).copy()
    diffs = [np.abs(r - e).max() for r, e in zip([*replayed, single], [*eager, eager_single], strict=True)]
    graph_diff = float(max(diffs))
    result["graphs_max_px"] = round(graph_diff, 5)
    result["graphs_captured"] = graphs.graph_count
    if not graph_diff <= 1e-3 * max(scale, 1.0) or graphs.graph_count == 0:
        out_file.write_text(json.dumps(result))
        fail(f"{args.name}: CUDA-graph replay differs from eager by {graph_diff:.5f} px or nothing was captured")
    graphs.close()
    result["trt_b1_ms"] = round(median_ms(lambda: trt_est.estimate(*pairs[0])), 2)
    result["trt_b4_ms_per_pair"] = round(median_ms(lambda: trt_est.estimate_batch(requests[:4])) / 4, 2)
    result["torch_b1_ms"] = round(median_ms(lambda: ref.estimate(*pairs[0])), 2)
    result["passed"] = True
    out_file.write_text(json.dumps(result))
    print(f"{args.name}: passed {json.dumps(result)}")


def table(args):
    out = Path(args.out)
    builds = {}
    steps = out / "steps.tsv"
    for line in steps.read_text().splitlines() if steps.is_file() else []:
        name, what, seconds, status = line.split("\t")
        builds.setdefault(name, {})[what] = (seconds, status)
    results = {p.stem: json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))}
    env_file = out / "environment.txt"
    print("### flownet2_ros TensorRT first run")
    print()
    for line in env_file.read_text().splitlines() if env_file.is_file() else ["environment: not checked"]:
        print(f"- {line}")
    print()
    print("| engine | batch | export s | build s | load s | b1 mean/max px | b4 mean/max px | b6 (4+2) mean/max px "
          "| graphs Δ px | TRT b1 ms | TRT b4 ms/pair | torch b1 ms | result |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in builds:
        r = results.get(name, {})
        step = builds[name]
        failed = [what for what, (_, status) in step.items() if status != "ok"]

        def pair(label, r=r):
            if f"{label}_mean_px" not in r:
                return "-"
            return f"{r[f'{label}_mean_px']}/{r[f'{label}_max_px']}"

        verdict = "PASS" if r.get("passed") and not failed else f"FAIL ({', '.join(failed) or 'check'})"
        print(
            f"| {name} | {r.get('batch', '-')} | {step.get('export', ('-',))[0]} | {step.get('build', ('-',))[0]} "
            f"| {r.get('load_s', '-')} | {pair('b1')} | {pair('b4')} | {pair('b6')} | {r.get('graphs_max_px', '-')} "
            f"| {r.get('trt_b1_ms', '-')} | {r.get('trt_b4_ms_per_pair', '-')} | {r.get('torch_b1_ms', '-')} "
            f"| {verdict} |"
        )


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("env")
    e.add_argument("--out", required=True)
    c = sub.add_parser("check")
    for flag in ("--engine", "--name", "--precision", "--json", "--batch"):
        c.add_argument(flag, required=True)
    c.add_argument("--model", default="")
    c.add_argument("--thin", action="store_true")
    c.add_argument("--checkpoint", default="")
    t = sub.add_parser("table")
    t.add_argument("--out", required=True)
    args = parser.parse_args()
    try:
        {"env": env, "check": check, "table": table}[args.command](args)
    except SystemExit:
        raise
    except Exception as exc:
        fail(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
PYEOF

# ------------------------------------------------------------------------------------- the steps
run_timeout=()
command -v timeout >/dev/null 2>&1 && run_timeout=(timeout "$step_timeout")

summary() {
  "$py" "$checker" table --out "$out" | tee "$out/summary.md"
}

# run_step LOGNAME NAME WHAT COMMAND...: log to OUT/logs/LOGNAME.log; on failure one line, the table, exit 1.
run_step() {
  local log="$out/logs/$1.log" name="$2" what="$3"
  shift 3
  local start=$SECONDS
  ${run_timeout[@]+"${run_timeout[@]}"} "$@" >"$log" 2>&1
  local status=$?
  local took=$((SECONDS - start))
  if [ -n "$name" ]; then
    printf '%s\t%s\t%s\t%s\n' "$name" "$what" "$took" "$([ $status -eq 0 ] && echo ok || echo failed)" >>"$out/steps.tsv"
  fi
  if [ $status -ne 0 ]; then
    local reason
    reason=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1)
    [ $status -eq 124 ] && reason="timed out after ${step_timeout}s"
    echo "FAILED at $what${name:+ $name} (exit $status, log $log): ${reason:-no output}"
    echo
    summary
    exit 1
  fi
  echo "ok: $what${name:+ $name} (${took}s)"
}

echo "== 1. environment"
run_step environment "" environment "$py" "$checker" env --out "$out"
cat "$out/environment.txt"

for entry in "${engines[@]}"; do
  IFS='|' read -r name export_args check_args <<<"$entry"
  precision=${name##*_}
  echo "== $name"
  # shellcheck disable=SC2086  # the argument lists are word-split on purpose
  run_step "export_$name" "$name" export "$py" -m flownet2_ros.cli.export_onnx $export_args \
    --input-size "$size" --dynamic-batch -o "$out/onnx/$name.onnx"
  run_step "build_$name" "$name" build "$py" -m flownet2_ros.cli.build_engine --onnx "$out/onnx/$name.onnx" \
    --precision "$precision" --batch "$batch" --timing-cache "$out/timing.cache" --no-progress \
    -o "$out/engines/$name.engine"
  # shellcheck disable=SC2086
  run_step "check_$name" "$name" check "$py" "$checker" check --engine "$out/engines/$name.engine" \
    --name "$name" --precision "$precision" --batch "$batch" --json "$out/results/$name.json" $check_args
done

echo
summary
echo
echo "all passed; paste the table above (also in $out/summary.md) into the issue"
exit 0
