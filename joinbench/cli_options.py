"""Options that ``joinbench run``, ``ablate`` and ``compare`` spell the same way (typer).

One definition each, so the three commands cannot drift apart in flag, default or help. An
option whose help differs on purpose (``--metrics``: each command's own default; ``--out``:
a run folder or a suite's) stays with its command. A typer ``Option`` is a declaration, not
a value: the same object may be the default of several commands' parameters.
"""
from __future__ import annotations

import typer

# A method may set a CPU default limit (joinbench.method.Method.cpu_default_limit), which
# every command applies through the planner, so the help says so wherever --limit appears.
_CPU_LIMITS = "on CPU unless given: 4 for the join-s1 variants, 2 for the other join variants"

LIMIT = typer.Option(None, "--limit", "-n", help=f"only the first N test images ({_CPU_LIMITS})")
LIMIT_EACH_DATASET = typer.Option(None, "--limit", "-n", help=f"only the first N test images of each dataset ({_CPU_LIMITS})")
BATCH_SIZE = typer.Option(16, "--batch-size", "-b", help="images per batch")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N")
RESOLUTION = typer.Option(64, "--resolution", "-r", help="power of two, 16..512")
SEED = typer.Option(0, "--seed", help="test-split seed")
RUNS_FROM = typer.Option(None, "--runs-from", help="COMMIT: re-render the report with this code from the finished runs "
                         "made at COMMIT in --out (a prefix; nothing is computed, every run must be finished)")
QUIET = typer.Option(False, "--quiet", "-q", help="no progress bars")

__all__ = ["BATCH_SIZE", "DEVICE", "LIMIT", "LIMIT_EACH_DATASET", "QUIET", "RESOLUTION", "RUNS_FROM", "SEED"]
