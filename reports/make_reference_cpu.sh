#!/usr/bin/env bash
# The reference reports of the benchmark suite (issue: ablation tables, main comparison) as far
# as this project's 2-core CPU allows: the first 2 test images of each dataset, JoIN with its
# CPU settings (steps=150, pti_steps=60, discriminator term every 4th PTI step), join-s1 with
# the paper's 1000 steps in the comparisons and 300 steps in its ablation table. Every run
# lands in one folder (runs/ref-cpu/runs), so a run shared by two reports (e.g. `join` on
# materials in the comparison and in the ablation) is computed once and reused.
# A GPU makes the full 100-image splits with the same commands without --limit / --set.
#
#   bash reports/make_reference_cpu.sh [part ...]
#   parts: variants main ablate-s1 ablate-join relight s1-default (default: all, in this order)
#   RUNS_FROM=COMMIT bash reports/make_reference_cpu.sh variants main ablate-s1 ablate-join
#     re-renders those reports with this code from the finished runs made at COMMIT (compare /
#     ablate --runs-from: nothing is computed; relight and s1-default are not suites).
# Two parts can run at once in two shells (e.g. OMP_NUM_THREADS=1 each on 2 cores): they share
# finished runs but never work on the same run if started as `variants main` and
# `relight ablate-s1 ablate-join` (ablate-join reuses the join, join-nopti and join-meaninit
# runs of `variants`, so start it after `variants` has finished a dataset).
set -euo pipefail
cd "$(dirname "$0")/.."
parts=${*:-variants main ablate-s1 ablate-join relight s1-default}
R=runs/ref-cpu
SYN=materials,materials-shift,faces,faces-shift
FROM=(); [ -n "${RUNS_FROM:-}" ] && FROM=(--runs-from "$RUNS_FROM")
mkdir -p "$R" reports/ablation-cpu
has() { [[ " $parts " == *" $1 "* ]]; }
keep_compare() {  # compare.md and the figures it shows (the shared $R/figures holds every part's), under reports/$1
  rm -rf "reports/$1" && mkdir -p "reports/$1/figures"
  cp "$R/compare.md" "$R/compare.csv" "reports/$1/"
  grep -o 'figures/[A-Za-z0-9_.-]*\.png' "$R/compare.md" | sort -u | while read -r f; do cp "$R/$f" "reports/$1/$f"; done
}
if has variants; then  # JoIN against its own variants on the four synthetic test sets (same 2 images each)
  joinbench compare --datasets "$SYN" --methods join,join-nopti,join-meaninit,join-s1 --limit 2 --device cpu \
    --out "$R" "${FROM[@]}" -q
  keep_compare join-variants-cpu
fi
if has main; then  # the main comparison: synthetic sets with ground truth, real sets qualitative + re-render
  joinbench compare --datasets "$SYN,real-materials,real-faces" --methods join,unet,color-retinex,retinex,trivial \
    --limit 2 --device cpu --out "$R" "${FROM[@]}" -q
  keep_compare compare-cpu
fi
if has ablate-s1; then  # the stage-1 ablations on every synthetic test set
  for d in ${SYN//,/ }; do
    joinbench ablate --dataset "$d" --spec join-s1 --limit 2 --set steps=300 --device cpu --out "$R" "${FROM[@]}" -q
    for ext in md csv tex; do cp "$R/ablation.$ext" "reports/ablation-cpu/join-s1-$d.$ext"; done
  done
fi
if has ablate-join; then  # the full-JoIN ablations (default spec) on every synthetic test set
  for d in ${SYN//,/ }; do
    joinbench ablate --dataset "$d" --limit 2 --device cpu --out "$R" "${FROM[@]}" -q
    for ext in md csv tex; do cp "$R/ablation.$ext" "reports/ablation-cpu/join-$d.$ext"; done
  done
fi
if has relight; then  # the paper's application on real images
  joinbench relight --dataset real-faces --index 0 --random-shading 3 --device cpu --out reports/relight-real-face.png
  joinbench relight --dataset real-materials --index 0 --shading-index 5 --device cpu --out reports/relight-real-material.png
fi
if has s1-default; then  # `joinbench run --method join-s1 --dataset materials` as a user runs it (CPU defaults:
  # first 4 images, 1000 steps; time it on an idle machine) next to the baselines on the same images
  /usr/bin/time -f "join-s1 end to end: %e s" joinbench run --method join-s1 --dataset materials --device cpu \
    --out runs/s1-cpu-default -q
  for m in color-retinex trivial; do
    joinbench run --method "$m" --dataset materials --limit 4 --device cpu --out "runs/$m-materials-4" -q
  done
  joinbench report runs/s1-cpu-default runs/color-retinex-materials-4 runs/trivial-materials-4 \
    --title "join-s1 (CPU defaults: first 4 materials test images, 1000 steps) next to color-retinex and trivial on the same images" \
    --out reports/join-s1-materials-cpu.md
fi
