#!/usr/bin/env bash
# Ship a GPU window of the campaign here (README: GPU campaign): the files a
# `bash scripts/gpu_campaign.sh` device call returned -> checked, FD-gated, installed weights,
# 100-image reports and one row of reports/priors/history.md (joinbench/campaign/ship.py).
#
#   bash scripts/ship_campaign.sh /work/.device/<call>/campaign.tar.part-* [manifest.json]
#
# FORCE=1 installs priors whose FD ratio got worse than the shipped ones' (refused otherwise);
# N (5000) FD-VGG samples; LIMIT (100) test images scored; NN_POOL (4096, 0 skips) training
# images of the nearest-neighbour figures; NOTE a sentence for the window's row.
# On this project's 2-core CPU the FD measurement takes about 30 minutes per dataset at N=5000.
# Then commit joinbench/weights, reports/ and README.md.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bash scripts/ship_campaign.sh <the files the device call returned>" >&2; exit 2; }
files=(); for f in "$@"; do files+=("$(realpath "$f")"); done
cd "$(dirname "$0")/.."
args=(--fd-n "${N:-5000}" --limit "${LIMIT:-100}" --nn-pool "${NN_POOL:-4096}" --note "${NOTE:-}")
[ "${FORCE:-0}" = 1 ] && args+=(--force)
joinbench campaign ship "${files[@]}" "${args[@]}"
joinbench priors info
du -ch joinbench/weights/*.safetensors | tail -1
