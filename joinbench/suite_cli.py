"""The ``joinbench ablate`` and ``joinbench compare`` commands (typer): options in, settings out.

The work is in :mod:`joinbench.ablate` and :mod:`joinbench.compare`.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .ablate import AblationSettings, run_ablation
from .compare import DEFAULT_COMPARE_DATASETS, DEFAULT_COMPARE_METHODS, CompareSettings, parse_method_sets, run_comparison
from .env import command_line
from .errors import JoinbenchError
from .cli_options import BATCH_SIZE, DEVICE, LIMIT, LIMIT_EACH_DATASET, QUIET, RESOLUTION, RUNS_FROM, SEED
from .spec import DEFAULT_SPEC, DEFAULT_TABLE_METRICS, load_spec


def ablate_cmd(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="registered dataset, e.g. materials"),
    spec: str = typer.Option(DEFAULT_SPEC, "--spec", "-s", help="spec file (TOML), or a shipped spec's name: join (default), join-s1"),
    limit: Optional[int] = LIMIT,
    batch_size: int = BATCH_SIZE,
    device: str = DEVICE,
    resolution: int = RESOLUTION,
    seed: int = SEED,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default runs/ablate/<spec>-<dataset>); finished runs in it are reused"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="setting for every variant, under the variant's own: key=value (repeatable)"),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="comma list of metrics (table columns); default: the spec's, "
                                          "else the dataset's benchmark metrics (whdr* on iiw:, ...), else "
                                          + ",".join(DEFAULT_TABLE_METRICS)),
    print_spec: bool = typer.Option(False, "--print-spec", help="print the spec's TOML (to copy and edit) and exit"),
    check: bool = typer.Option(False, "--check", help="validate the spec and show each run (reused or to run); run nothing"),
    runs_from: Optional[str] = RUNS_FROM,
    quiet: bool = QUIET,
):
    """Run the ablation variants of a spec on DATASET: one table (ablation.md, .csv, .json, .tex).

    Example: joinbench ablate --dataset materials --limit 8
    """
    from .method import parse_set_options

    if print_spec:
        typer.echo(load_spec(spec).text, nl=False)
        return
    if not dataset:
        raise JoinbenchError("ablate needs --dataset, e.g. `joinbench ablate --dataset materials` "
                             "(see `joinbench list datasets`).")
    if metrics is not None and not _comma_list(metrics):
        raise JoinbenchError(f"--metrics {metrics!r} names no metric; give a comma list (see `joinbench list metrics`).")
    settings = AblationSettings(dataset=dataset, spec=spec, limit=limit, batch_size=batch_size, device=device,
                                resolution=resolution, seed=seed, out=out, overrides=parse_set_options(set_),
                                metrics=None if metrics is None else _comma_list(metrics), progress=not quiet,
                                command=command_line(), check_only=check, runs_from=runs_from)
    folder = run_ablation(settings)
    from .distributed import context

    if context().is_main and not check:
        typer.echo((folder / "ablation.md").read_text())
        typer.echo(f"ablation folder: {folder}")


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def compare_cmd(
    datasets: str = typer.Option(",".join(DEFAULT_COMPARE_DATASETS), "--datasets", help="comma list of datasets"),
    methods: str = typer.Option(",".join(DEFAULT_COMPARE_METHODS), "--methods", help="comma list of methods (table rows)"),
    limit: Optional[int] = LIMIT_EACH_DATASET,
    batch_size: int = BATCH_SIZE,
    device: str = DEVICE,
    resolution: int = RESOLUTION,
    seed: int = SEED,
    metrics: Optional[str] = typer.Option(None, "--metrics", help="comma list of metrics (table columns); default: each "
                                          f"dataset's benchmark metrics (whdr* on iiw:, ...), else {','.join(DEFAULT_TABLE_METRICS)}"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default runs/compare); finished runs in it are reused"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="setting of one method: METHOD:key=value (repeatable)"),
    grid_images: int = typer.Option(4, "--grid-images", help="images per dataset figure (at most 8)"),
    title: str = typer.Option("Main comparison", "--title", help="heading of compare.md"),
    check: bool = typer.Option(False, "--check", help="validate and show each run (reused or to run); run nothing"),
    runs_from: Optional[str] = RUNS_FROM,
    quiet: bool = QUIET,
):
    """Run METHODS on DATASETS: one report (compare.md, .csv, .json) with a table and a figure per dataset.

    Example: joinbench compare --datasets materials,real-materials --methods unet,retinex,trivial --limit 8
    """
    method_list = _comma_list(methods)
    if not 1 <= grid_images <= 8:
        raise JoinbenchError(f"--grid-images must be from 1 to 8, got {grid_images}.")
    if metrics is not None and not _comma_list(metrics):
        raise JoinbenchError(f"--metrics {metrics!r} names no metric; give a comma list (see `joinbench list metrics`).")
    settings = CompareSettings(datasets=_comma_list(datasets), methods=method_list, limit=limit,
                               batch_size=batch_size, device=device, resolution=resolution, seed=seed,
                               metrics=None if metrics is None else _comma_list(metrics), out=out, overrides=parse_method_sets(set_, method_list),
                               grid_images=grid_images, progress=not quiet, command=command_line(), check_only=check,
                               title=title, runs_from=runs_from)
    folder = run_comparison(settings)
    from .distributed import context

    if context().is_main and not check:
        typer.echo((folder / "compare.md").read_text())
        typer.echo(f"compare folder: {folder}")


__all__ = ["ablate_cmd", "compare_cmd"]
