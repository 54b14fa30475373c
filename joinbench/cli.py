"""The ``joinbench`` command line (typer)."""
from __future__ import annotations

import sys

import typer

from .errors import JoinbenchError
from .registry import REGISTRIES

app = typer.Typer(add_completion=False, no_args_is_help=True, help="joinbench: intrinsic image decomposition benchmark (JoIN and baselines).")


@app.callback()
def _root() -> None:
    """joinbench: intrinsic image decomposition benchmark (JoIN and baselines)."""


@app.command("list")
def list_cmd(kind: str = typer.Argument(..., help="methods | datasets | metrics | forward-models"),
             pattern: str = typer.Option("*", "--pattern", "-p", help="shell pattern, e.g. 'join*'")):
    """List registered methods, datasets, metrics or forward models with descriptions."""
    if kind not in REGISTRIES:
        import difflib

        close = difflib.get_close_matches(kind, list(REGISTRIES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise JoinbenchError(f"Unknown kind {kind!r}.{hint} Use one of: {', '.join(REGISTRIES)}.")
    rows = REGISTRIES[kind].describe(pattern)
    width = max((len(n) for n, _ in rows), default=0)
    for name, desc in rows:
        typer.echo(f"{name.ljust(width)}  {desc}")


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    try:
        app()
    except JoinbenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
