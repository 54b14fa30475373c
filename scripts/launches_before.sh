#!/usr/bin/env bash
# The "before" column of reports/launches.md: the launch counts of the code at commit BEFORE
# (default 54946f9, the engine issue's baseline), counted by this checkout's profiler.
# The old code runs from its own git worktree and virtual environment (so `import joinbench`
# is the old code); this checkout's joinbench/launches.py and joinbench/profile.py are copied
# into it as untracked files (they only import modules that exist there too).
#   bash scripts/launches_before.sh            # ~30-60 min on 2 busy cores
#   then: joinbench profile all --before /tmp/jb-before-launches.json --out reports/launches.md
set -euo pipefail
before=${BEFORE:-54946f9}
tree=${TREE:-/tmp/jb-before}
venv=${VENV:-/tmp/venv-before}
out=${OUT_MD:-/tmp/jb-before-launches.md}
here=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$tree" ] || git -C "$here" worktree add --detach "$tree" "$before"
[ "$(git -C "$tree" rev-parse --short=7 HEAD)" = "$(git -C "$here" rev-parse --short=7 "$before")" ] \
  || { echo "$tree is not at $before; remove it (git worktree remove $tree) or set TREE"; exit 2; }
[ -x "$venv/bin/python" ] || python -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q --no-deps -e "$tree"
cp "$here/joinbench/launches.py" "$here/joinbench/profile.py" "$tree/joinbench/"
# run outside any checkout so that `import joinbench` is the worktree's
cd /tmp && OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$venv/bin/python" -m joinbench.profile all --out "$out"
python - "$out" "$before" "$(git -C "$here" rev-parse --short=7 HEAD)" <<'PY'
import json, pathlib, sys
path = pathlib.Path(sys.argv[1]).with_suffix(".json")
report = json.loads(path.read_text())
report["environment"]["code_commit"] = sys.argv[2]
report["environment"]["how"] = (f"scripts/launches_before.sh: code at {sys.argv[2]} in a git worktree, counted by "
                                f"joinbench/profile.py of {sys.argv[3]}")
path.write_text(json.dumps(report, indent=2) + "\n")
print("before figures:", path)
PY
