#!/usr/bin/env bash
# CPU smoke test of the whole GPU campaign (README: GPU campaign), so that a GPU window is never
# spent on a script error. Everything happens in scratch copies of this checkout (its tracked and
# untracked-not-ignored files) under SMOKE_DIR (default: a new temporary folder); this checkout's
# joinbench/weights, reports and README are never touched.
#
#   bash scripts/smoke_campaign.sh            # 16-25 minutes on a loaded 2-core CPU
#
#   1. base/: tiny 16 px models trained from nothing (priors, encoders, U-Nets) replace the
#      shipped 64 px ones as its "shipped state", logged as window 0;
#   2. gpu/ (a copy of base/): DEVICE=cpu RES=16 ... bash scripts/gpu_campaign.sh $MINUTES, all four
#      stages, returning its parts into out/;
#   3. here/ (another copy of base/): FORCE=1 N=64 LIMIT=2 bash scripts/ship_campaign.sh out/*:
#      installs, scores, reports and logs window 1.
# The copies import their own code (PYTHONPATH; joinbench/datasets and joinbench/baselines are
# links, as the package mapping makes them). The tiny U-Nets train without their LPIPS-Alex term
# (AlexNet needs 31 px; `train unet` does not upsample 16 px images), and the window continues them so.
# MINUTES (12) is the window's budget: generous, because a loaded 2-core CPU starts each process slowly.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
root=${SMOKE_DIR:-$(mktemp -d -t joinbench-smoke-XXXX)}
minutes=${MINUTES:-12}
mkdir -p "$root"
root=$(cd "$root" && pwd)
echo "smoke campaign in $root"
copy() {  # copy SRC DEST: the files git knows of (tracked, and untracked but not ignored)
  mkdir -p "$2"
  (cd "$1" && git ls-files -z -c -o --exclude-standard | xargs -0 -I{} sh -c '[ -e "{}" ] && printf "%s\0" "{}"' \
    | tar -c --null -T - ) | tar -x -C "$2"
  ln -sfn ../datasets "$2/joinbench/datasets"
  ln -sfn ../baselines "$2/joinbench/baselines"
}
in_copy() {  # in_copy DIR CMD...: run with DIR's code
  local dir=$1; shift
  (cd "$dir" && PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$@")
}
jb() { python3 -m joinbench "$@"; }

# 1. the "shipped" state: tiny 16 px models
copy "$src" "$root/base"
train=$root/train
rm -f "$root"/base/joinbench/weights/*
for ds in materials faces; do
  for comp in all joint; do
    in_copy "$root/base" jb train prior --dataset $ds --component $comp --resolution 16 --batch 8 --kimg 0.032 \
      --device cpu --quiet --out "$train/prior-$ds-$comp" > "$root/train.log"
    cp "$train/prior-$ds-$comp"/*.safetensors "$train/prior-$ds-$comp"/$ds-*.json "$root/base/joinbench/weights/"
  done
  for comp in all joint; do
    in_copy "$root/base" jb train encoder --dataset $ds --component $comp --kimg 0.016 --batch 8 --gain-images 1 \
      --gain-steps 2 --perceptual none --device cpu --quiet --out "$train/encoder-$ds-$comp" >> "$root/train.log"
    cp "$train/encoder-$ds-$comp"/*-encoder.* "$root/base/joinbench/weights/"
  done
  in_copy "$root/base" jb train unet --dataset $ds --resolution 16 --kimg 0.032 --batch 8 --width 4 --levels 2 --lpips-weight 0 \
    --device cpu --quiet --out "$train/unet-$ds" >> "$root/train.log"
  cp "$train/unet-$ds"/$ds-unet.* "$root/base/joinbench/weights/"
done
rm -f "$root"/base/reports/priors/history.jsonl
in_copy "$root/base" jb campaign history --window 0 --note "smoke: tiny 16 px models" > /dev/null
cp -r "$root/base" "$root/gpu"
cp -r "$root/base" "$root/here"

# 2. the GPU window, on the CPU
in_copy "$root/gpu" env DEVICE=cpu RES=16 BATCH=8 MODEL_BATCH=8 LIMIT=2 JOIN_SET="steps=2 pti_steps=1" GAIN=1,2 OVERHEAD=1 \
  SHARES=a=0.15,b=0.3,c=0.55 \
  OUT="$root/out" bash scripts/gpu_campaign.sh "$minutes"

# a failed job or run is a script or code error (a timeout only means the loaded CPU was slow)
python3 - "$root/gpu/runs/campaign/window/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
jobs = {n: j["status"] for s in m["stages"].values() for n, j in s.get("jobs", {}).items()}
runs = {n: r["status"] for n, r in m["runs"].items()}
for name, status in {**jobs, **runs}.items():
    print(f"  {name}: {status}")
failed = [n for n, s in {**jobs, **runs}.items() if s.startswith("failed")]
sys.exit(f"smoke: failed in the window: {', '.join(failed)} (logs: runs/campaign/window/logs/)" if failed else 0)
PY

# 3. ship it here
in_copy "$root/here" env FORCE=1 N=64 LIMIT=2 NN_POOL=16 NOTE="smoke" bash scripts/ship_campaign.sh "$root"/out/*
in_copy "$root/here" sed -n '/## Results: albedo LPIPS/,$p' reports/priors/history.md
echo "smoke campaign passed: $root/here/reports/priors/history.md" \
  "$(ls "$root"/here/reports/compare-gpu/compare.md "$root"/here/reports/ablation-gpu/*.md 2>/dev/null | tr '\n' ' ')"
