#!/usr/bin/env bash
# reports/timing-cpu.{md,json,png}: join, join-s1, unet and color-retinex at batch 1 and 4 on
# this project's 2-core CPU (step counts capped at 10: the per-step figures are what matter).
# Run it on an otherwise idle machine: it measures time.
#   bash reports/make_timing_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
R=runs/rep
# join with the paper's discriminator schedule (the term on every PTI step), not the CPU setting
# of every 4th step: the README's cost per image is computed from these per-step figures.
joinbench timing --dataset materials --methods join,join-s1,unet,color-retinex --batch-sizes 1,4 --images 4 \
  --device cpu --set join:pti_disc_every=1 --out "$R/timing-cpu" -q
for ext in md json png; do cp "$R/timing-cpu/timing.$ext" "reports/timing-cpu.$ext"; done
