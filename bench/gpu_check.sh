#!/usr/bin/env bash
# One GPU session for the networks work (run through the device tool, see BENCHMARKS.md):
#   installs the carried wheels (.whl/: monai, nibabel; the image has torch, scipy,
#   scikit-image, safetensors, tqdm), then bench/gpu_train.py trains the default 2.5D
#   model and the 3D baseline in bf16/channels-last, measures training throughput
#   (model-only vs end-to-end) and inference times, and scores 20 held-out phantoms.
# Usage: bash bench/gpu_check.sh [extra gpu_train.py args]; results land in $OUT.
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  SITE=$(mktemp -d)/site
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || exit 1
  export PYTHONPATH=$SITE:${PYTHONPATH:-}
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 bench/gpu_train.py --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
