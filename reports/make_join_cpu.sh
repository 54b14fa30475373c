#!/usr/bin/env bash
# JoIN's reference reports on this project's 2-core CPU, with each method's CPU defaults
# (join*: first 2 images, steps=150, pti_steps=60, discriminator term every 4th PTI step;
# join-s1 on the same 2 images with the paper's 1000 steps). Small samples: a GPU run of the same
# commands without the CPU defaults gives the full 100-image splits.
#   bash reports/make_join_cpu.sh [part ...]    parts: join timing relight ablate (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
parts=${*:-join timing relight ablate}
R=runs/rep
mkdir -p "$R"
has() { [[ " $parts " == *" $1 "* ]]; }
if has join; then  # the README's main command, its variants and the baselines on the same 2 images
  for m in join join-nopti join-meaninit; do  # CPU default: the first 2 images, CPU settings
    joinbench run --method "$m" --dataset materials --device cpu --out "$R/$m-materials" -q
  done
  for m in join-s1 color-retinex trivial unet; do  # join-s1 with the paper's 1000 steps
    joinbench run --method "$m" --dataset materials --limit 2 --device cpu --out "$R/$m-materials-2" -q
  done
  joinbench report "$R/join-materials" "$R/join-nopti-materials" "$R/join-meaninit-materials" "$R/join-s1-materials-2" \
    "$R/color-retinex-materials-2" "$R/trivial-materials-2" "$R/unet-materials-2" \
    --title "JoIN, its variants and the baselines on the first 2 materials test images (64 px, CPU)" \
    --out reports/join-materials-cpu.md
fi
if has timing; then  # run on an otherwise idle machine: it measures time
  joinbench timing --dataset materials --methods join,join-s1,unet,color-retinex --batch-sizes 1,4 --images 4 \
    --device cpu --out "$R/timing-cpu" -q
  cp "$R/timing-cpu/timing.md" reports/timing-cpu.md
  cp "$R/timing-cpu/timing.json" reports/timing-cpu.json
  cp "$R/timing-cpu/timing.png" reports/timing-cpu.png
fi
if has relight; then
  joinbench relight --dataset real-faces --index 0 --random-shading 3 --device cpu --out reports/relight-real-face.png
  joinbench relight --dataset real-materials --index 0 --shading-index 5 --device cpu --out reports/relight-real-material.png
fi
if has ablate; then  # the stage-1 ablations (the full-JoIN spec needs a GPU to be meaningful)
  joinbench ablate --dataset materials --spec join-s1 --limit 2 --set steps=300 --device cpu --out "$R/ablate-s1"
  cp "$R/ablate-s1/ablation.md" reports/ablation-s1-materials-cpu.md
fi
