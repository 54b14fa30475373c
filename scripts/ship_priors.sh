#!/usr/bin/env bash
# Install GAN priors trained elsewhere (scripts/gpu_train_priors.sh's priors.tar, or a
# `joinbench train prior --out` folder) into joinbench/weights/, replacing the old files,
# then measure them (FD-VGG on this machine's CPU) and write reports/priors/.
#   bash scripts/ship_priors.sh priors.tar|FOLDER [N_FD_SAMPLES]
set -euo pipefail
src=$1
n=${2:-5000}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
if [ -f "$src" ]; then tar -xf "$src" -C "$work"; else cp -r "$src"/. "$work"/; fi
mkdir -p joinbench/weights reports/priors
find "$work" \( -name '*-G.safetensors' -o -name '*-D.safetensors' -o -name '*.json' \) \
  -not -path '*/checkpoint/*' -exec cp {} joinbench/weights/ \;
for ds in materials faces; do
  joinbench priors eval --dataset "$ds" --component all --n "$n" --device auto
  for c in albedo shading specular joint; do
    [ -f "joinbench/weights/$ds-$c.json" ] || continue
    joinbench priors sample --dataset "$ds" --component "$c" --n 64 --out "reports/priors/$ds-$c-samples.png"
  done
  joinbench datasets preview "$ds" --n 8 --out "reports/priors/$ds-real.png"
done
joinbench priors info | tee reports/priors/info.txt
du -ch joinbench/weights/*.safetensors | tail -1
