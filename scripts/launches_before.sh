#!/usr/bin/env bash
# The "before" column of reports/launches.md: the launch counts of the code at commit BEFORE
# (default 54946f9, the engine issue's baseline), counted by this checkout's profiler.
# The old code runs from its own git worktree and virtual environment (so `import joinbench`
# is the old code); this checkout's joinbench/launches.py and joinbench/profile.py are copied
# into it as untracked files (they only import modules that exist there too).
#   bash scripts/launches_before.sh            # about an hour on 2 busy cores
#   then the command it prints: joinbench profile all --before .../before-0.json --before ... --out reports/launches.md
set -euo pipefail
before=${BEFORE:-54946f9}
tree=${TREE:-/tmp/jb-before}
venv=${VENV:-/tmp/venv-before}
out_dir=${OUT_DIR:-/tmp/jb-before-launches}
here=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$tree" ] || git -C "$here" worktree add --detach "$tree" "$before"
[ "$(git -C "$tree" rev-parse --short=7 HEAD)" = "$(git -C "$here" rev-parse --short=7 "$before")" ] \
  || { echo "$tree is not at $before; remove it (git worktree remove $tree) or set TREE"; exit 2; }
[ -x "$venv/bin/python" ] || python -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q --no-deps -e "$tree"
cp "$here/joinbench/launches.py" "$here/joinbench/profile.py" "$tree/joinbench/"
mkdir -p "$out_dir"
# run outside any checkout so that `import joinbench` is the worktree's; three groups in parallel
# (the training rows dominate: 18 iterations of three 64 px GANs at batch 16 each)
groups=("train materials all,train faces all" "train materials all (CUDA path)"
        "stage1 materials,stage1 materials (CUDA path),pti materials,pti materials (CUDA path),render materials,render faces")
pids=()
for i in 0 1 2; do
  (cd /tmp && OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$venv/bin/python" -m joinbench.profile all --only report \
     --names "${groups[$i]}" --out "$out_dir/before-$i.md") &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || exit 1; done
python - "$out_dir" "$before" "$(git -C "$here" rev-parse --short=7 HEAD)" <<'PY'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("before-*.json")):
    report = json.loads(path.read_text())
    report["after"]["environment"]["code_commit"] = sys.argv[2]
    report["after"]["environment"]["how"] = (f"the code at {sys.argv[2]} in a git worktree, counted by "
                                             f"joinbench/profile.py of {sys.argv[3]}")
    report["after"]["command"] = "bash scripts/launches_before.sh"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print("before figures:", path)
PY
echo "then: joinbench profile all --before $out_dir/before-0.json --before $out_dir/before-1.json --before $out_dir/before-2.json --only none --out reports/launches.md"
