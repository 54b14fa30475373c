#!/usr/bin/env bash
# Stage 1's speed on a GPU (the stage-1 issue's H100 figures): join-s1 at batch 1 and batch 64
# (STEPS steps each: per-step cost and the batched speed-up), then 100 materials test images x
# 1000 steps in one batch, keeping the predictions to score here (exact fp32 LPIPS).
# Uses the shipped priors, or those of scripts/gpu_train_priors.sh when it ran before on the
# same machine (runs/priors/).
#   device run (carry: carry/ with lpips-*.whl and vgg16-features.fp16.safetensors):
#     bash scripts/gpu_join_timing.sh SECONDS     # wall budget of the 100 x 1000-step run
#   returns $OUT/join-timing.tar: runs/gpu-join/{b1,b64,full-materials}/ (records, summary, predictions)
set -uo pipefail
budget=${1:-100}
device=${DEVICE:-cuda}  # DEVICE=cpu STEPS=2: a smoke test of this script
steps=${STEPS:-100}
dest=${OUT:-runs/gpu-out}
mkdir -p "$dest" runs/gpu-join
[ -d runs/priors ] && find runs/priors -mindepth 2 -maxdepth 2 \( -name '*-G.safetensors' -o -name '*-D.safetensors' \
  -o -name 'materials-*.json' -o -name 'faces-*.json' \) -exec cp {} joinbench/weights/ \;
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site carry/lpips-*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 JOINBENCH_LPIPS_WEIGHTS=$PWD/carry
joinbench priors info || true
run() { joinbench run --method join-s1 --dataset materials --device "$device" --metrics none -q "$@"; }
# per-step cost at batch 1 and batch 64 (100 steps each), then the headline 100 images x 1000 steps
run --limit 2 --batch-size 1 --set steps=$steps --out runs/gpu-join/b1
run --limit 64 --batch-size 64 --set steps=$steps --out runs/gpu-join/b64
t0=$(date +%s)
timeout "$budget" joinbench run --method join-s1 --dataset materials --device "$device" --metrics none -q \
  --limit 100 --batch-size 100 --save-predictions --out runs/gpu-join/full-materials
echo "full-materials exit $? wall $(( $(date +%s) - t0 )) s" | tee runs/gpu-join/full-materials.time
python3 - <<'PY'
import json, pathlib
for d in sorted(pathlib.Path("runs/gpu-join").glob("*/summary.json")):
    s = json.loads(d.read_text())
    print(d.parent.name, s["environment"]["device_name"], json.dumps(s["timing"]))
PY
tar -cf "$dest/join-timing.tar" -C runs gpu-join
ls -la "$dest"
