#!/usr/bin/env bash
# Train every prior joinbench ships, concurrently on one GPU, inside a fixed time budget,
# and pack what comes back. Written for the project's lent GPU machine (no network; torch,
# typer, safetensors, scipy, tqdm already installed there):
#
#   device run, repo root:  bash scripts/gpu_train_priors.sh 4      # minutes of training per prior
#   returns:                $OUT/priors.tar.part-aa, -ab, ... (exports, sidecars, logs, sample
#                           grids; no checkpoints), split because one returned file may hold 16 MiB
#   then here:              cat priors.tar.part-* > priors.tar && bash scripts/ship_priors.sh priors.tar
#
# Eight processes share the GPU, one per model: materials and faces x albedo, shading,
# specular, joint, each at 64 px, stopped by --minutes (checkpoint + export) rather than by
# --kimg. One process per model rather than `--component all` because an eager StyleGAN2
# step at 64 px is bound by kernel launches on the CPU side, so eight launching processes
# keep the GPU busier than three models stepping in turn in one process. The sidecars record
# the images seen, images/s, device and commit. Checkpoints stay behind (~100 MB together).
# DEVICE, RES and BATCH (defaults cuda, 64, 128) exist for a CPU smoke test of this script:
#   DEVICE=cpu RES=16 BATCH=8 bash scripts/gpu_train_priors.sh 0.2
set -uo pipefail
minutes=${1:-4}
device=${DEVICE:-cuda}
res=${RES:-64}
batch=${BATCH:-128}
dest=${OUT:-runs/gpu-out}
mkdir -p "$dest" runs/priors
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
pids=()
for ds in materials faces; do
  for comp in albedo shading specular joint; do
    joinbench train prior --dataset "$ds" --component "$comp" --resolution "$res" --batch "$batch" --device "$device" \
      --kimg 1000000 --minutes "$minutes" --snapshot-kimg 100000 --log-kimg 20 --quiet \
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
