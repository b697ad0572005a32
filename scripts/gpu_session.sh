#!/usr/bin/env bash
# What a session lent a GPU runs there, in one call of the device tool (its image has torch with
# CUDA, cuda-python, onnx and onnxruntime for the CPU, but no TensorRT and no network):
#   here, once:  echo /.gpu-carry/ >> .git/info/exclude
#                mkdir -p .gpu-carry/cache && cp -r ~/.cache/cvmatte/u2netp .gpu-carry/cache/
#   device run:  bash scripts/gpu_session.sh   (carry: [".gpu-carry"]; results land in $OUT)
# Then copy $OUT's files to benchmarks/results/<gpu>/ and write the figures into NOTES and README.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cvmatte-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CVMATTE_CACHE=${CVMATTE_CACHE:-$PWD/.gpu-carry/cache}
PY=${PY:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
# The package without its dependencies: the image has them, bar the server's (not imported here).
$PY -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
$PY -m pytest -q -m gpu -rs tests/ 2>&1 | tee "$OUT/pytest_gpu.txt"
for args in "fp32" "fp32 --cuda-graphs" "fp16 --cuda-graphs"; do
  set -- $args
  tag="$1${2:+_graphs}"
  $PY -m cvmatte.benchmarks.batching --backend torch --preset cvunet-s --device cuda --size 512 \
      --precision "$@" --batches 1 4 8 16 --depths 1 3 --inputs 256 --out "$OUT/batching_cvunet-s_512_$tag.json" \
      2>&1 | tee "$OUT/batching_cvunet-s_512_$tag.txt"
done
