#!/usr/bin/env bash
# Fill carry/ (git-ignored) with what a GPU machine without network needs for the scripts in
# scripts/gpu_*.sh: the `lpips` wheel (its linear calibration layers), the VGG16 features in
# float16 (JoIN's LPIPS-VGG loss and FD-VGG; 29 MB) and the AlexNet features in float16 (the
# U-Net's LPIPS-Alex training loss in the campaign's stage b; 5 MB), both hash-checked when
# loaded, and carry/commit (the commit the tree is at: the device gets no .git). Run it here,
# right before the device call, then pass carry=["carry"] to it. The working tree and carry/
# travel together and may hold 64 MiB: the last line says how much they take.
#   bash scripts/make_carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p carry
ls carry/lpips-*.whl >/dev/null 2>&1 || pip download -q --no-deps --only-binary :all: -d carry "lpips==0.1.4"
python - <<'PY'
from joinbench.lpips_weights import save_fp16
print("wrote", save_fp16("vgg16", "carry"))
print("wrote", save_fp16("alexnet", "carry"))
PY
echo "$(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!reports' || echo +dirty)" > carry/commit
du -ch carry/* | tail -1
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "working tree $((tree / 1048576)) MiB + carry/ $(( $(du -sb carry | cut -f1) / 1048576 )) MiB travel (limit 64 MiB)"
