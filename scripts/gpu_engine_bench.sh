#!/usr/bin/env bash
# The engine's GPU measurement (issue 14, point 6) as ONE device job of at most 8 minutes:
# images/s per GAN at batch 64/256/512 eager vs CUDA graphs, stage 1 on 100 images x 1000 steps,
# PTI on 100 images x 300 steps, kernels per step (torch.profiler), achieved TFLOP/s vs the peak.
# Writes engine-gpu.md, engine-gpu.json and engine-gpu.log into $OUT (commit the .md/.json as
# reports/engine-gpu.*). What each figure means: scripts/gpu_engine_bench.py.
#
# Here first (LPIPS for stage 1/PTI: the lpips wheel and the VGG16 features, no network there):
#   bash scripts/make_carry.sh
# Then the device call: run(command="bash scripts/gpu_engine_bench.sh", carry=["carry"], timeout_s=540)
# CPU smoke test of this script (minutes; never spend a GPU window on a script error):
#   DEVICE=cpu RES=16 BATCHES=2 ITERS=2 WARMUP=1 PROFILE_ITERS=2 S1_IMAGES=1 S1_STEPS=2 PTI_IMAGES=1 \
#     PTI_STEPS=2 OMP_NUM_THREADS=1 OUT=/tmp/engine-smoke bash scripts/gpu_engine_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
dest=${OUT:-runs/engine-gpu}
device=${DEVICE:-cuda}
mkdir -p "$dest"
if [ "$device" != cpu ]; then  # the device machine: install this checkout and what carry/ holds, offline
  python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
  if ls carry/lpips-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site carry/lpips-*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "note: no carry/lpips-*.whl (run scripts/make_carry.sh here first): stage 1 and PTI will fail on LPIPS"
  fi
  [ -f carry/vgg16-features.fp16.safetensors ] && export JOINBENCH_LPIPS_WEIGHTS=$PWD/carry
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,driver_version --format=csv || true
fi
export PYTHONUNBUFFERED=1
# 470 s for the Python job: 8 minutes minus the install above, with the report rewritten after
# every section, so what was measured comes back even when the limit cuts a section short
timeout "${LIMIT_S:-470}" python3 scripts/gpu_engine_bench.py --device "$device" --out "$dest" \
  --resolution "${RES:-64}" --batches "${BATCHES:-64,256,512}" --iters "${ITERS:-20}" --warmup "${WARMUP:-5}" \
  --s1-images "${S1_IMAGES:-100}" --s1-steps "${S1_STEPS:-1000}" --pti-images "${PTI_IMAGES:-100}" \
  --pti-steps "${PTI_STEPS:-300}" --profile-iters "${PROFILE_ITERS:-16}" --budget "${BUDGET_S:-450}" \
  --gan-budget "${GAN_BUDGET_S:-200}" --s1-budget "${S1_BUDGET_S:-110}" --pti-budget "${PTI_BUDGET_S:-110}" \
  2>&1 | tee "$dest/engine-gpu.log"
status=${PIPESTATUS[0]}
ls -la "$dest"
exit "$status"
