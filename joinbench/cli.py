"""The ``joinbench`` command line (typer). User errors print one line and exit 2."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .cli_options import BATCH_SIZE, DEVICE, LIMIT, QUIET, RESOLUTION, SEED
from .env import command_line
from .errors import Interrupted, JoinbenchError, did_you_mean
from .gan.cli import priors_app
from .registry import REGISTRIES
from .training.cli import train_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="joinbench: intrinsic image decomposition benchmark (JoIN and baselines).")
datasets_app = typer.Typer(no_args_is_help=True, help="Preview, describe and export datasets.")
weights_app = typer.Typer(no_args_is_help=True, help="Provision pretrained backbone weights offline.")
app.add_typer(datasets_app, name="datasets")
app.add_typer(weights_app, name="weights")
app.add_typer(train_app, name="train")
app.add_typer(priors_app, name="priors")


@app.callback()
def _root() -> None:
    """joinbench: intrinsic image decomposition benchmark (JoIN and baselines)."""


@app.command("list")
def list_cmd(kind: str = typer.Argument(..., help="methods | datasets | metrics | forward-models"),
             pattern: str = typer.Option("*", "--pattern", "-p", help="shell pattern, e.g. 'join*'")):
    """List registered methods, datasets, metrics or forward models with descriptions.

    Example: joinbench list methods
    """
    if kind not in REGISTRIES:
        raise JoinbenchError(f"Unknown kind {kind!r}.{did_you_mean(kind, REGISTRIES)} Use one of: {', '.join(REGISTRIES)}.")
    rows = REGISTRIES[kind].describe(pattern)
    width = max((len(n) for n, _ in rows), default=0)
    for name, desc in rows:
        extra = ""
        if kind == "metrics":
            from .registry import create_metric

            m = create_metric(name)
            extra = f"[{'higher' if m.higher_is_better else 'lower'} is better, {m.space}] "
        elif kind == "methods":  # every method class declares its kind (joinbench.method.METHOD_KINDS)
            extra = f"[{REGISTRIES[kind].get(name)[0].factory.kind}] "
        typer.echo(f"{name.ljust(width)}  {extra}{desc}")


@app.command("run")
def run_cmd(
    method: str = typer.Option(..., "--method", "-m", help="registered method, e.g. color-retinex (see `joinbench list methods`)"),
    dataset: str = typer.Option(..., "--dataset", "-d", help="registered dataset, e.g. materials, folder:PATH"),
    limit: Optional[int] = LIMIT,
    batch_size: int = BATCH_SIZE,
    device: str = DEVICE,
    resolution: int = RESOLUTION,
    seed: int = SEED,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run folder (default runs/<time>-<method>-<dataset>); rerun into it to resume"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="override a method setting: key=value (repeatable)"),
    metrics: str = typer.Option("default", "--metrics", help="comma list, 'default' (the dataset's benchmark metrics, e.g. whdr* on iiw:, else mse,psnr,ssim,lpips,si-mse,si-lmse,lmse,dssim) or 'none' (score later with --method predictions:RUN/predictions)"),
    save_predictions: bool = typer.Option(False, "--save-predictions", help="keep every prediction (lossless npz) in RUN/predictions"),
    grid_images: int = typer.Option(8, "--grid-images", help="rows in grid.png"),
    quiet: bool = QUIET,
):
    """Run METHOD on DATASET: records.jsonl, summary.json, table.md and grid.png in a run folder.

    Example: joinbench run --method color-retinex --dataset materials
    """
    from .method import parse_set_options
    from .plan import RunSettings
    from .runner import run_benchmark

    metric_list = None if metrics == "default" else (() if metrics == "none" else tuple(m.strip() for m in metrics.split(",") if m.strip()))
    if metric_list == () and metrics != "none":
        raise JoinbenchError(f"--metrics {metrics!r} names no metric; give a comma list (see `joinbench list metrics`), "
                             "'default', or 'none' to score later.")
    if grid_images < 0:
        raise JoinbenchError(f"--grid-images must be 0 or more, got {grid_images}.")
    settings = RunSettings(method=method, dataset=dataset, limit=limit, batch_size=batch_size, device=device,
                           resolution=resolution, seed=seed, out=out, overrides=parse_set_options(set_),
                           metrics=metric_list, save_predictions=save_predictions, grid_images=grid_images,
                           progress=not quiet, command=command_line())
    run_dir = run_benchmark(settings)
    typer.echo((run_dir / "table.md").read_text())
    typer.echo(f"run folder: {run_dir}")


def _file_out(text: str | None, example: str = "report.md") -> Path | None:
    """An --out that names a file: "dir/" (a folder, perhaps not yet made) is refused here,
    because Path("dir/") forgets the slash and would write a file called dir."""
    if text is not None and text.endswith(("/", os.sep)):
        raise JoinbenchError(f"--out {text} names a folder; give a file name (e.g. {text.rstrip('/' + os.sep)}/{example}).")
    return None if text is None else Path(text)


@app.command("report")
def report_cmd(
    runs: List[Path] = typer.Argument(..., help="run folders to compare"),
    format: str = typer.Option("md", "--format", "-f", help="md | latex | csv | html"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="file to write instead of stdout"),
    title: Optional[str] = typer.Option(None, "--title", help="report title"),
):
    """Merge run folders into one comparison table (best per column marked).

    Example: joinbench report runs/*-materials --format html --out report.html
    """
    from .env import write_atomic
    from .report import render_report

    out = _file_out(out)
    text = render_report(list(runs), format, title, command=command_line())
    if out:
        write_atomic(out, text)
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text, nl=False)


@datasets_app.command("preview")
def datasets_preview(
    name: str = typer.Argument(..., help="dataset name, e.g. materials"),
    n: int = typer.Option(16, "--n", help="number of samples (rows)"),
    resolution: int = typer.Option(64, "--resolution", "-r"),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="PNG file (default NAME-preview.png)"),
):
    """A grid with one row per test sample: image | albedo | shading | specular (| mask).

    Example: joinbench datasets preview materials --n 16 --out materials.png
    """
    from .plan import open_dataset
    from .viz import dataset_rows, grid_image, save_image_atomic

    if n < 1:
        raise JoinbenchError(f"--n must be at least 1, got {n}.")
    out = _file_out(out, "preview.png")
    ds = open_dataset(name, resolution, seed)
    rows, labels = dataset_rows(ds, n)
    path = out or Path(f"{name.replace(':', '_').replace('/', '_')}-preview.png")
    save_image_atomic(grid_image(rows, labels, cell=max(64, resolution)), path)
    typer.echo(f"wrote {path} ({min(n, len(ds))} samples of {name} at {resolution} px)")


@datasets_app.command("info")
def datasets_info(name: str = typer.Argument(...), resolution: int = typer.Option(64, "--resolution", "-r")):
    """Describe a dataset: size, ground truth, forward model, source and licence.

    Example: joinbench datasets info materials-shift
    """
    from .plan import open_dataset

    ds = open_dataset(name, resolution, 0)
    for k, v in ds.info().items():
        typer.echo(f"{k}: {v}")


@datasets_app.command("export")
def datasets_export(
    name: str = typer.Argument(...),
    out: Path = typer.Option(..., "--out", "-o", help="output folder"),
    split: str = typer.Option("test", "--split", help="only 'test' (training data is an infinite stream)"),
    resolution: int = typer.Option(64, "--resolution", "-r"),
    seed: int = typer.Option(0, "--seed"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n"),
):
    """Write a test split as PNGs (every layer) plus lossless linear npz copies.

    Example: joinbench datasets export materials --split test --out exported/materials
    """
    from .export import export_dataset
    from .plan import open_dataset

    if split != "test":
        raise JoinbenchError(f"Only the test split can be exported (got --split {split!r}); training data is an infinite procedural stream.")
    if limit is not None and limit < 1:
        raise JoinbenchError(f"--limit must be at least 1, got {limit} (leave it out for the whole split).")
    ds = open_dataset(name, resolution, seed)
    path = export_dataset(ds, out, limit)
    n = len(ds) if limit is None else min(limit, len(ds))
    typer.echo(f"exported {n} samples of {name} to {path}")


@weights_app.command("lpips")
def weights_lpips(path: Optional[Path] = typer.Option(None, "--path", help="explicit folder holding the weights")):
    """Provision torchvision's ImageNet AlexNet and VGG16 features for LPIPS, offline-capably.

    Example: joinbench weights lpips
    """
    from .lpips_weights import provision_all

    provision_all(path)  # prints where each file is


# -- commands that live in their own modules (one line each; keep this block) ------------
# e.g. from .timing import timing_cmd; app.command("timing")(timing_cmd)
from .relight import relight_cmd; app.command("relight")(relight_cmd)  # noqa: E402,E702
from .timing import timing_cmd; app.command("timing")(timing_cmd)  # noqa: E402,E702
from .profile import profile_cmd; app.command("profile")(profile_cmd)  # noqa: E402,E702
from .suite_cli import ablate_cmd, compare_cmd; app.command("ablate")(ablate_cmd); app.command("compare")(compare_cmd)  # noqa: E402,E702
from .campaign.cli import campaign_app; app.add_typer(campaign_app, name="campaign")  # noqa: E402,E702
# -- end of command block ------------------------------------------------------------------


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    try:
        app()
    except JoinbenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        typer.echo(_interrupted_line(exc), err=True)
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130:  # typer turns Ctrl-C into a silent exit 130: say what to do
            typer.echo("\n" + _interrupted_line(exc), err=True)
        raise


def _interrupted_line(exc: BaseException) -> str:
    """What the interrupted work said it kept (a run names its folder: :class:`Interrupted`,
    found in the chain typer wraps around it), else the generic line."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, Interrupted) and seen.args:
            return str(seen.args[0])
        seen = seen.__cause__ or seen.__context__
    return INTERRUPTED


INTERRUPTED = ("interrupted: finished work is kept; rerun the same command (same --out) to resume "
               "(run, ablate, compare; train: add --resume)")


if __name__ == "__main__":
    main()
