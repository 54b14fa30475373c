#!/usr/bin/env bash
# Regenerates reports/baselines-<dataset>.md: the baselines (trivial, retinex, color-retinex,
# and the shipped U-Net) on the default 100-image, 64 px test splits, scored with every
# default metric (LPIPS included), then merged by `joinbench report`.
# Usage: bash reports/make_baselines.sh   (about a minute per dataset on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf runs/baselines
for ds in materials materials-shift faces faces-shift; do
  for m in trivial retinex color-retinex unet; do
    joinbench run --method "$m" --dataset "$ds" --device cpu --out "runs/baselines/$m-$ds" --quiet > /dev/null
  done
  joinbench report "runs/baselines/trivial-$ds" "runs/baselines/retinex-$ds" "runs/baselines/color-retinex-$ds" "runs/baselines/unet-$ds" \
    --title "Baselines on $ds (100 test images, 64 px)" --out "reports/baselines-$ds.md"
done
