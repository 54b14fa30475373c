#!/usr/bin/env bash
# Is a 4,096-image render call fast on the GPU, alone and with other processes on the same GPU?
# (An H200 run with eight training processes rendering 4,096 images per call logged no progress
# in 6.5 minutes; on the CPU no cost of such a call grows faster than its size: see
# scripts/gpu_train_priors.sh.) One device call of about two minutes, nothing else needed:
#
#   device run, repo root:  bash scripts/gpu_render_probe.sh     # -> $OUT/render-probe.txt
#
# Prints, per dataset at 64 px: seconds per call (CUDA-synchronised, after two warm-up calls),
# images/s and peak GPU memory for calls of 256, 1,024 and 4,096 images in one process; then
# the same 4,096-image calls with PROCS processes (default 8: four of each dataset) at once,
# as the stalled run had. A call that takes more than LIMIT seconds (default 120) is killed and
# reported as such, which is itself the answer.
# CPU smoke test: DEVICE=cpu SIZES="16 32" BIG=32 PROCS=2 OUT=/tmp/jb-probe bash scripts/gpu_render_probe.sh
set -uo pipefail
cd "$(dirname "$0")/.."
device=${DEVICE:-cuda}
sizes=${SIZES:-256 1024 4096}
big=${BIG:-4096}
procs=${PROCS:-8}
limit=${LIMIT:-120}
out=${OUT:-runs/gpu-out}
mkdir -p "$out"
if [ "$device" != cpu ]; then
  python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
probe() {  # DATASET TAG SIZE...
  timeout "$limit" python3 - "$device" "$@" <<'PY' || echo "$2: $1 killed after ${limit}s (or failed)"
import sys, time, torch
from joinbench.registry import create_dataset
device, name, tag, sizes = torch.device(sys.argv[1]), sys.argv[2], sys.argv[3], [int(s) for s in sys.argv[4:]]
ds = create_dataset(name, resolution=64)
gen = torch.Generator().manual_seed(sum(map(ord, tag)))  # a stream per process
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
for _ in range(2):  # learn the draw plans, move their constants to the device
    ds.render_batch_at(ds.train_seeds(gen, 256), device)
for n in sizes:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    t = time.perf_counter()
    for _ in range(2):
        out = ds.render_batch_at(ds.train_seeds(gen, n), device)
        del out
    sync()
    dt = (time.perf_counter() - t) / 2
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    print(f"{tag}: {name} {n:5d} images/call: {dt:7.3f} s/call, {n / dt:8.0f} images/s, peak {peak:5.1f} GiB", flush=True)
PY
}
{
  echo "== one process, calls of $sizes images"
  for ds in materials faces; do probe "$ds" alone $sizes; done
  echo "== $procs processes at once, $big images per call"
  pids=()
  for i in $(seq 1 "$procs"); do
    ds=materials; [ $((i % 2)) = 0 ] && ds=faces
    probe "$ds" "proc$i" "$big" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
} 2>&1 | tee "$out/render-probe.txt"
