#!/usr/bin/env bash
# JoIN's reference reports on this project's 2-core CPU, with each method's CPU defaults
# (join-s1: first 4 test images, paper schedule; join*: first 2 images, steps=150,
# pti_steps=60, discriminator term every 4th PTI step). Small samples: a GPU run of the same
# commands without the CPU defaults gives the full 100-image splits.
#   bash reports/make_join_cpu.sh [part ...]    parts: s1 join timing relight ablate (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
parts=${*:-s1 join timing relight ablate}
R=runs/rep
mkdir -p "$R"
has() { [[ " $parts " == *" $1 "* ]]; }
if has s1; then  # join-s1 next to the baselines on the same 4 materials images
  joinbench run --method join-s1 --dataset materials --device cpu --out "$R/join-s1-materials" -q
  for m in trivial color-retinex unet; do
    joinbench run --method "$m" --dataset materials --limit 4 --device cpu --out "$R/$m-materials-4" -q > /dev/null
  done
  joinbench report "$R/join-s1-materials" "$R/color-retinex-materials-4" "$R/trivial-materials-4" "$R/unet-materials-4" \
    --title "join-s1 vs baselines on the first 4 materials test images (64 px, CPU)" --out reports/join-s1-materials-cpu.md
fi
if has join; then  # the README's main command, and its variants on the same 2 images
  for m in join join-nopti join-meaninit; do  # CPU default: the first 2 images
    joinbench run --method "$m" --dataset materials --device cpu --out "$R/$m-materials" -q
  done
  joinbench run --method join-s1 --dataset materials --limit 2 --device cpu --out "$R/join-s1-materials-2" -q
  joinbench report "$R/join-materials" "$R/join-nopti-materials" "$R/join-meaninit-materials" "$R/join-s1-materials-2" \
    --title "JoIN variants on the first 2 materials test images (64 px, CPU settings)" --out reports/join-materials-cpu.md
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
