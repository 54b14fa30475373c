#!/usr/bin/env bash
# Continue every prior joinbench ships, on one GPU, inside a fixed time budget, and pack what
# comes back. Written for the project's lent GPU machine (no network; torch, typer, safetensors,
# scipy, tqdm already installed there):
#
#   device run, repo root:  bash scripts/gpu_train_priors.sh 6      # minutes of training per prior
#   returns:                $OUT/priors.tar.part-aa, -ab, ... (exports, sidecars, logs, sample
#                           grids; no checkpoints), split because one returned file may hold 16 MiB
#   then here:              cat priors.tar.part-* > priors.tar && bash scripts/ship_priors.sh priors.tar
#
# The engine (README: GAN priors): four processes share the GPU, materials `all` (albedo, shading
# and specular as one fused bank), materials `joint`, faces `all`, faces `joint`, each at 64 px,
# batch 512, continuing the shipped weights (--init-from shipped: the sidecars' images seen and
# history add up), drawing batches from a 16,384-image data pool on the GPU rendered 4,096 images
# per call, with the G, D, R1 and EMA steps captured as CUDA graphs, stopped by --minutes
# (checkpoint + export) rather than by --kimg. Launches per iteration: `joinbench profile train`.
# Settings (environment): DEVICE (cuda), RES (64), BATCH (512), INIT (shipped; empty: from
# nothing, a folder: those exports), POOL (pool size), CHUNK (images per render call), PRECISION
# (fp32 | bf16), GRAPHS (0: --no-cuda-graphs), LOG_KIMG (50), RUNS (runs/priors-window: scratch,
# emptied first), OUT (runs/gpu-out).
# The stalled 4,096-image run: at 54946f9, eight processes (one per model), batch 128 and
# --render-chunk 4096 logged no progress in 6.5 minutes at 100% GPU on an H200. On the CPU nothing
# in a 4,096-image render call grows faster than its size (ops per call are fixed: then 15,973 for
# materials, now 2,462; peak memory ~1 MB per image, as materials renders 64 px even for 16 px;
# user time per image flat), and that command, old code or new, logs every 8 iterations on the
# CPU. Only the CPU's system time grew (page faults of temporaries over 32 MB: 2.5x slower per
# image; the host CPU now renders in pieces). The stall is GPU-side and not reproduced; suspects:
# eight launch-bound processes time-slicing one GPU without MPS, ~50 GB of render temporaries
# across them (faces ~1.9 MB per image in one call), and the old renderer's host syncs and
# blocking host-to-device copies, each a wait for the GPU's queue (per call: materials 9 + 16,
# faces 2 + 74; now none). `bash scripts/gpu_render_probe.sh` (one ~2 minute device call) times
# 4,096-image calls alone and eight at once.
# CPU smoke test of this script (a few minutes on 2 cores; the shipped priors are 64 px):
#   DEVICE=cpu BATCH=8 POOL=32 LOG_KIMG=0.008 RUNS=/tmp/jb-priors OUT=/tmp/jb-out bash scripts/gpu_train_priors.sh 0.2
# and from nothing at 16 px: DEVICE=cpu RES=16 BATCH=8 POOL=32 INIT= RUNS=/tmp/jb-priors OUT=/tmp/jb-out bash scripts/gpu_train_priors.sh 0.1
set -uo pipefail
minutes=${1:-6}
cd "$(dirname "$0")/.."
device=${DEVICE:-cuda}
res=${RES:-64}
batch=${BATCH:-512}
init=${INIT-shipped}
runs=${RUNS:-runs/priors-window}
dest=${OUT:-runs/gpu-out}
extra=()
[ -n "$init" ] && extra+=(--init-from "$init")
[ -n "${POOL:-}" ] && extra+=(--pool-size "$POOL")
[ -n "${CHUNK:-}" ] && extra+=(--render-chunk "$CHUNK")
[ -n "${PRECISION:-}" ] && extra+=(--precision "$PRECISION")
[ "${GRAPHS:-1}" = 0 ] && extra+=(--no-cuda-graphs)
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if [ "$device" != cpu ]; then  # the device machine: install this checkout
  python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
fi
rm -rf "$runs"
mkdir -p "$dest" "$runs"
rm -f "$dest"/priors.tar.part-*
pids=()
for ds in materials faces; do
  for comp in all joint; do
    python3 -m joinbench train prior --dataset "$ds" --component "$comp" --resolution "$res" --batch "$batch" \
      --device "$device" --kimg 1000000 --minutes "$minutes" --snapshot-kimg 1000000 --log-kimg "${LOG_KIMG:-50}" \
      "${extra[@]}" --quiet --out "$runs/$ds-$comp" > "$runs/$ds-$comp.log" 2>&1 &
    pids+=($!)
  done
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
tail -n 2 "$runs"/*.log
for f in "$runs"/*/log.jsonl; do echo "$f: $(tail -n 1 "$f")"; done
# split: one file back from the device may hold at most 16 MiB
tar -cf - --exclude=checkpoint -C "$runs" . | split -b 12m - "$dest/priors.tar.part-"
ls -la "$dest"
exit $status
