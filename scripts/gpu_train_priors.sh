#!/usr/bin/env bash
# Train every prior joinbench ships, concurrently on one GPU, inside a fixed time budget,
# and pack what comes back. Written for the project's lent GPU machine (no network; torch,
# typer, safetensors, scipy, tqdm already installed there):
#
#   device run, repo root:  bash scripts/gpu_train_priors.sh 6      # minutes of training per prior
#   returns:                $OUT/priors.tar.part-aa, -ab, ... (exports, sidecars, logs, sample
#                           grids; no checkpoints), split because one returned file may hold 16 MiB
#   then here:              cat priors.tar.part-* > priors.tar && bash scripts/ship_priors.sh priors.tar
#
# Four processes share the GPU: materials `all` (albedo, shading, specular stepping in turn
# in one process), materials `joint`, faces `all`, faces `joint`, each at 64 px, batch 64,
# stopped by --minutes (checkpoint + export) rather than by --kimg. This is the configuration
# that produced the shipped priors (H200, 6 minutes: 54-110 images/s per model, launch-bound).
# SPLIT=1 runs one process per model (8) instead, and CHUNK=N renders N images per call of the
# procedural generator; with SPLIT=1 BATCH=128 CHUNK=4096 an H200 run logged no progress in
# 6.5 minutes at 100% GPU utilisation (cause not found yet), so neither is the default.
# The sidecars record the images seen, images/s, device and commit. Checkpoints stay behind.
# DEVICE, RES and BATCH (defaults cuda, 64, 64) exist for a CPU smoke test of this script:
#   DEVICE=cpu RES=16 BATCH=8 bash scripts/gpu_train_priors.sh 0.2
set -uo pipefail
minutes=${1:-6}
device=${DEVICE:-cuda}
res=${RES:-64}
batch=${BATCH:-64}
chunk=${CHUNK:-$batch}
if [ "${SPLIT:-0}" = 1 ]; then comps="albedo shading specular joint"; else comps="all joint"; fi
dest=${OUT:-runs/gpu-out}
mkdir -p "$dest" runs/priors
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
pids=()
for ds in materials faces; do
  for comp in $comps; do
    joinbench train prior --dataset "$ds" --component "$comp" --resolution "$res" --batch "$batch" --device "$device" \
      --kimg 1000000 --minutes "$minutes" --snapshot-kimg 100000 --log-kimg 2 --render-chunk "$chunk" --quiet \
      --out "runs/priors/$ds-$comp" > "runs/priors/$ds-$comp.log" 2>&1 &
    pids+=($!)
  done
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
tail -n 2 runs/priors/*.log
for f in runs/priors/*/log.jsonl; do echo "$f: $(tail -n 1 "$f")"; done
# split: one file back from the device may hold at most 16 MiB
tar -cf - --exclude=checkpoint -C runs/priors . | split -b 12m - "$dest/priors.tar.part-"
ls -la "$dest"
exit $status
