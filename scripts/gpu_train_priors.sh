#!/usr/bin/env bash
# Train every prior joinbench ships, concurrently on one GPU, inside a fixed time budget,
# and pack what comes back into one file. Written for the project's lent GPU machine
# (no network; torch, typer, safetensors, scipy, tqdm already installed there):
#
#   device run, repo root:  bash scripts/gpu_train_priors.sh 7      # minutes of training per prior
#   returns:                $OUT/priors.tar  (exports, sidecars, logs, sample grids; no checkpoints)
#   then here:              bash scripts/ship_priors.sh /path/to/priors.tar
#
# Four processes share the GPU: materials `all` (albedo, shading, specular in one process),
# materials `joint`, faces `all`, faces `joint`, each at 64 px, batch 64, stopped by
# --minutes (checkpoint + export) rather than by --kimg. The sidecars record the images seen,
# images/s, device and commit. Checkpoints stay behind (they are ~100 MB together).
# DEVICE, RES and BATCH (defaults cuda, 64, 64) exist for a CPU smoke test of this script:
#   DEVICE=cpu RES=16 BATCH=8 bash scripts/gpu_train_priors.sh 0.2
set -uo pipefail
minutes=${1:-7}
device=${DEVICE:-cuda}
res=${RES:-64}
batch=${BATCH:-64}
dest=${OUT:-runs/gpu-out}
mkdir -p "$dest" runs/priors
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
pids=()
for ds in materials faces; do
  for comp in all joint; do
    joinbench train prior --dataset "$ds" --component "$comp" --resolution "$res" --batch "$batch" --device "$device" \
      --kimg 1000000 --minutes "$minutes" --snapshot-kimg 500 --log-kimg 50 --quiet \
      --out "runs/priors/$ds-$comp" > "runs/priors/$ds-$comp.log" 2>&1 &
    pids+=($!)
  done
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
tail -n 3 runs/priors/*.log
tar -cf "$dest/priors.tar" --exclude=checkpoint -C runs/priors .
ls -la "$dest"
exit $status
