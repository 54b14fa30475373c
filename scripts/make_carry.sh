#!/usr/bin/env bash
# Fill carry/ (git-ignored) with what a GPU machine without network needs for the scripts in
# scripts/gpu_*.sh: the `lpips` wheel (its linear calibration layers) and the VGG16 features
# in float16 (JoIN's LPIPS-VGG loss and FD-VGG; 29 MB, hash-checked when loaded). Run it here,
# then pass carry=["carry"] to the device call.
#   bash scripts/make_carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p carry
ls carry/lpips-*.whl >/dev/null 2>&1 || pip download -q --no-deps --only-binary :all: -d carry "lpips==0.1.4"
python - <<'PY'
from joinbench.lpips_weights import save_fp16
print("wrote", save_fp16("vgg16", "carry"))
PY
du -ch carry/* | tail -1
