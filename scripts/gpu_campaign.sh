#!/usr/bin/env bash
# One GPU window of the campaign (README: GPU campaign): continue every shipped model from
# joinbench/weights, then evaluate, all inside MINUTES (at most 9: one device call is at most 10,
# and the last half minute packs what came out).
#
#   here first:         bash scripts/make_carry.sh        # carry/: lpips wheel, fp16 VGG16, commit
#   device run:         bash scripts/gpu_campaign.sh 9    # carry=["carry"], timeout_s=600
#   returns in $OUT:    campaign.tar.part-00.. (15 MiB each, 60 MiB at most) + manifest.json
#   then here:          bash scripts/ship_campaign.sh <the returned files>
#
# Stages (joinbench/campaign/window.py; their shares of the budget: a 45%, b 20%, c 35%, d what c leaves):
#   a  train prior --init-from shipped: materials and faces, --component all and joint, four at once
#   b  train encoder --init-from shipped against the new priors (all, joint) and train unet, six at once
#   c  join and join-s1 on materials, materials-shift, bank:materials, faces, faces-shift, bank:faces
#      (LIMIT test images, one batch, --save-predictions, every metric but LPIPS)
#   d  the default ablation spec's variants on materials, the same way
# STAGES=cd finishes the evaluation of the installed (already shipped) priors in a second call:
# runs that reports/priors/history.jsonl already holds for them are skipped.
#
# Settings (environment): STAGES (abcd), DEVICE (cuda), RES (64), BATCH (512: priors), MODEL_BATCH (64:
# encoders and U-Nets), LIMIT (100),
# JOIN_SET ("k=v k=v" for every JoIN run), GAIN ("images,steps" of the encoders' stage-1 gain, 8,100),
# SHARES (a=0.45,b=0.2,c=0.35), OVERHEAD (0.5 minutes per training stage for start-up and export).
# Each model continues with its shipped settings (the U-Net's width, levels, resolution and loss are
# read from its sidecar); each window's trainings draw new data (--seed = the window's number).
# The CPU smoke test of the whole campaign (scripts/smoke_campaign.sh) runs this with
#   DEVICE=cpu RES=16 BATCH=8 MODEL_BATCH=8 LIMIT=2 JOIN_SET="steps=2 pti_steps=1" GAIN=1,2
set -uo pipefail
minutes=${1:-9}
cd "$(dirname "$0")/.."
dest=${OUT:-runs/campaign/out}
device=${DEVICE:-cuda}
window=runs/campaign/window
export PYTHONUNBUFFERED=1
if [ "$device" != cpu ]; then  # the device machine: install this checkout, and what carry/ brings
  python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
fi
if ! python3 -c "import lpips" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site carry/lpips-*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
[ -f carry/vgg16-features.fp16.safetensors ] && export JOINBENCH_LPIPS_WEIGHTS=$PWD/carry
rm -rf "$window"
sets=(); for s in ${JOIN_SET:-}; do sets+=(--join-set "$s"); done
gain=${GAIN:-8,100}
python3 -m joinbench campaign window "$minutes" --out "$window" --stages "${STAGES:-abcd}" --device "$device" \
  --resolution "${RES:-64}" --batch "${BATCH:-512}" --model-batch "${MODEL_BATCH:-64}" --limit "${LIMIT:-100}" "${sets[@]}" \
  --gain-images "${gain%,*}" --gain-steps "${gain#*,}" --shares "${SHARES:-a=0.45,b=0.2,c=0.35}" \
  --overhead "${OVERHEAD:-0.5}"
status=$?
python3 -m joinbench campaign pack "$window" --out "$dest" || status=1
ls -la "$dest"
exit $status
