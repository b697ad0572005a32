#!/usr/bin/env bash
# What a session lent a GPU runs there, in one call of the device tool (its image has torch with
# CUDA, torchvision, cuda-python, onnx and onnxruntime for the CPU, but no TensorRT and no network):
#   here, once:  echo /.gpu-carry/ >> .git/info/exclude
#                mkdir -p .gpu-carry/cache && cp -r ~/.cache/cvmatte/u2netp .gpu-carry/cache/
#   device run:  bash scripts/gpu_session.sh   (carry: [".gpu-carry"]; results land in $OUT)
# Every step has its own timeout and writes its result file as it finishes; the whole script
# stays under 8 minutes. Try it on the CPU first: DEVICE=cpu SMALL=1 bash scripts/gpu_session.sh
# Then copy $OUT's files to benchmarks/results/<gpu>/ and write the figures into NOTES and README.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cvmatte-gpu}
DEVICE=${DEVICE:-cuda}
SMALL=${SMALL:-0}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CVMATTE_CACHE=${CVMATTE_CACHE:-$PWD/.gpu-carry/cache}
PY=${PY:-python3}
step() {  # step SECONDS NAME COMMAND...: run with a timeout, log to $OUT/NAME.txt, say how it ended
  local limit=$1 name=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name: exit $? in $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt"
# The package without its dependencies: the image has them, bar the server's (not imported here).
step 60 install $PY -m pip install -q --no-deps --no-build-isolation -e .
if [ "$SMALL" = 1 ]; then
  step 300 pipeline_small $PY -m cvmatte.benchmarks.gpu_pipeline --device "$DEVICE" --n2 4 --mp2 0.3 --n12 0 \
       --batch 2 --model-seconds 1 --out "$OUT/pipeline_small"
  exit 0
fi
step 120 pytest_gpu $PY -m pytest -q -m gpu -rs -p no:cacheprovider tests/
# End to end against the ceiling: 2 MP and 12 MP catalogs (issue: >= 50% of model-only, >= 3x CPU decode).
step 200 pipeline_fp16 $PY -m cvmatte.benchmarks.gpu_pipeline --device "$DEVICE" --precision fp16 --graphs \
     --n2 500 --n12 100 --batch 16 --out "$OUT/pipeline_fp16_graphs"
step 100 batching_fp16 $PY -m cvmatte.benchmarks.batching --backend torch --preset cvunet-s --device "$DEVICE" \
     --size 512 --precision fp16 --cuda-graphs --batches 1 8 16 --depths 3 --inputs 256 \
     --out "$OUT/batching_cvunet-s_512_fp16_graphs.json"
