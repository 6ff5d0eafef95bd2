#!/usr/bin/env bash
# The GPU check: one command for a lent GPU machine, at most about 8 minutes, that writes its
# results under benchmarks/results/ (commit them).
#
#   bash benchmarks/gpu_check.sh                    # on the GPU machine
#   bash benchmarks/gpu_check.sh --device cpu --quick  # the test suite: every step, tiny counts
#
# The lent machines reach no registry and no hub, and run their own python3 (PyTorch, CUDA).
# `make gpu-carry` puts in .gpu-carry/ what they lack: wheels of the engine's small pure-Python
# dependencies and the embedded model's config and tokenizer (bench_gpu.py gives it random
# weights of the same shape). Name .gpu-carry in the device tool's `carry`. Steps whose
# packages are missing there (onnxruntime-genai-cuda, fastapi) say so and are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
QUICK=
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift ;;
        --quick) QUICK=--quick ;;
        *) echo "gpu_check: unknown argument $1 (known: --device cpu|cuda, --quick)"; exit 2 ;;
    esac
    shift
done
PY=${PYTHON:-python3}
if [ "$DEVICE" = cuda ] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU on this machine; nothing measured"
    exit 0
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
MODEL=()
if [ -d .gpu-carry ]; then
    "$PY" -m pip install -q --no-deps --no-index --target /tmp/gpu-carry-site .gpu-carry/wheels/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/gpu-carry-site"
    MODEL=(--model .gpu-carry/model)
fi
status=0
step() {
    echo "== $*"
    "$PY" "$@" || { echo "gpu_check: step failed: $*"; status=1; }
}
has() { "$PY" -c "import $1" 2>/dev/null; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
step benchmarks/bench_gpu.py --device "$DEVICE" $QUICK "${MODEL[@]}"
if [ -n "$QUICK" ]; then
    echo "gpu_check: bench_inference skipped in --quick (it needs the embedded model and minutes)"
elif has onnxruntime_genai && ! [ -d .gpu-carry ]; then
    step benchmarks/bench_inference.py --device "$DEVICE" --rounds 2
else
    echo "gpu_check: onnxruntime-genai or the embedded model is missing here; ONNX steps skipped"
fi
if has onnxruntime_genai; then
    step benchmarks/bench_engine.py --device "$DEVICE" $QUICK "${MODEL[@]}"
else
    echo "gpu_check: onnxruntime-genai is missing here; og.Engine skipped"
fi
if has fastapi && has uvicorn && has onnxruntime_genai; then
    step benchmarks/bench_serve.py --device "$DEVICE" $QUICK "${MODEL[@]}"
else
    echo "gpu_check: fastapi, uvicorn or onnxruntime-genai is missing here; bench_serve skipped"
fi
exit $status
