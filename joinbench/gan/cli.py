"""Command line for GAN priors: ``joinbench priors info|sample|eval|nearest``.

A typer app mounted by :mod:`joinbench.cli` (training is ``joinbench train``, in
:mod:`joinbench.training.cli`). Heavy imports happen inside the commands so ``joinbench
--help`` stays fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import JoinbenchError

priors_app = typer.Typer(no_args_is_help=True, help="Inspect, sample and evaluate GAN priors.")


@priors_app.callback()
def _priors_root() -> None:
    """Inspect, sample and evaluate GAN priors."""


def _fmt(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


@priors_app.command("info")
def priors_info(path: Optional[Path] = typer.Option(None, "--path", help="folder of priors (default: the shipped joinbench/weights)")):
    """List GAN priors with their sidecar figures (size, images seen, FD-VGG, device, commit).

    Example: joinbench priors info
    """
    from .bank import check_prior_files, list_priors, weights_dir

    found = list_priors(path)
    broken = [r for r in found if "problem" in r]
    rows = [r for r in found if "problem" not in r]
    for r in broken:
        typer.echo(f"warning: {r['sidecar']}: {r['problem']}; re-export that prior or restore the file", err=True)
    if not rows:
        where = path or weights_dir()
        typer.echo(f"no GAN priors in {where}; train one with `joinbench train prior --dataset materials --component all`")
        return
    header = ["prior", "res", "kimg", "G params", "G+D MB", "FD-VGG", "floor", "ratio", "device", "commit", "files"]
    table = []
    for r in rows:
        folder = Path(r["sidecar"]).parent
        size = sum((folder / f).stat().st_size for f in r.get("files", {}).values() if (folder / f).is_file())
        table.append([f"{r['dataset']}-{r['component']}", str(r.get("resolution")), f"{r.get('kimg', 0):g}",
                      f"{r.get('params', {}).get('G', 0):,}", f"{size / 1e6:.2f}", _fmt(r.get("fd")),
                      _fmt(r.get("fd_floor")), _fmt(r.get("fd_ratio")), str(r.get("device", "?"))[:24],
                      str(r.get("commit", "?"))[:10], check_prior_files(r)])
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for t in table:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(t, widths)))


@priors_app.command("sample")
def priors_sample(
    dataset: str = typer.Option(..., "--dataset", "-d"),
    component: str = typer.Option(..., "--component", "-c", help="albedo | shading | specular | joint"),
    n: int = typer.Option(64, "--n", help="number of samples"),
    out: Path = typer.Option(Path("grid.png"), "--out", "-o", help="PNG file"),
    psi: float = typer.Option(1.0, "--psi", help="truncation psi (1 = none)"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    path: Optional[Path] = typer.Option(None, "--path", help="folder or sidecar of the prior (default: shipped weights)"),
):
    """Write a grid of samples (encoded display space) of a prior.

    Example: joinbench priors sample --dataset materials --component albedo --n 64 --out grid.png
    """
    from ..viz import grid_image, save_image_atomic
    from .bank import load_prior
    from .prior_format import grid_rows

    if n < 1:
        raise JoinbenchError(f"--n must be at least 1 (got {n}).")
    prior = load_prior(dataset, component, device, path)
    images = prior.sample(n, seed=seed, truncation_psi=psi).cpu()
    rows = grid_rows(images, prior.component)
    save_image_atomic(grid_image(rows, cell=max(64, prior.resolution)), out)
    typer.echo(f"wrote {out} ({n} samples of {dataset}-{component}, psi {psi:g})")


@priors_app.command("eval")
def priors_eval(
    dataset: str = typer.Option(..., "--dataset", "-d"),
    component: str = typer.Option(..., "--component", "-c", help="albedo | shading | specular | joint | all"),
    n: int = typer.Option(5000, "--n", help="samples per set"),
    device: str = typer.Option("auto", "--device"),
    seed: int = typer.Option(0, "--seed"),
    batch: int = typer.Option(64, "--batch", "-b"),
    path: Optional[Path] = typer.Option(None, "--path", help="folder of the priors (default: shipped weights)"),
    write: bool = typer.Option(True, "--write/--no-write", help="store the figures in the sidecar(s)"),
):
    """FD-VGG of prior samples vs procedural data, with the floor (two procedural sets); updates the sidecar.

    Example: joinbench priors eval --dataset materials --component all --n 5000
    """
    from .bank import load_prior, sidecar_path
    from .fd import evaluate_priors

    if component == "all":
        names = ["albedo", "shading", "specular"]
        if sidecar_path(dataset, "joint", path).is_file():
            names.append("joint")
    else:
        names = [component]
    priors = [load_prior(dataset, c, "cpu", path) for c in names]
    results = evaluate_priors(priors, n=n, device=device, seed=seed, batch=batch, update_sidecar=write)
    for c, r in results.items():
        typer.echo(f"{dataset}-{c}: FD-VGG {r['fd']:.3f}  floor {r['fd_floor']:.3f}  ratio {_fmt(r['ratio'])}  (n={r['n']})")
        for sub, v in (r.get("components") or {}).items():
            typer.echo(f"    {sub}: FD-VGG {v['fd']:.3f}  floor {v['fd_floor']:.3f}  ratio {_fmt(v['ratio'])}")
    if write:
        typer.echo("sidecars updated")



@priors_app.command("nearest")
def priors_nearest(
    dataset: str = typer.Option(..., "--dataset", "-d"),
    component: str = typer.Option(..., "--component", "-c", help="albedo | shading | specular | joint | all (every prior, one pass over the pool)"),
    out: Path = typer.Option(..., "--out", "-o", help="image file, .png or .jpg (a folder for --component all: <dataset>-<component>-nearest.<--format> each); the distances go beside each as .json"),
    fmt: str = typer.Option("png", "--format", help="png | jpg: the figures' format with --component all (jpg: a fifth of the size; sample noise does not compress)"),
    n: int = typer.Option(64, "--n", help="prior samples (the same as `priors sample --seed`)"),
    pool: int = typer.Option(4096, "--pool", help="procedural training images searched (the start of the prior's training stream)"),
    reference: Optional[int] = typer.Option(None, "--reference", help="held-out procedural images searched too, for scale (default: --n)"),
    seed: int = typer.Option(0, "--seed", help="latents of the samples"),
    device: str = typer.Option("auto", "--device"),
    batch: int = typer.Option(256, "--batch", "-b", help="images per render / feature call"),
    path: Optional[Path] = typer.Option(None, "--path", help="folder of the priors (default: shipped weights)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
):
    """Each sample next to its nearest procedural training image by LPIPS-Alex: new images or copies?

    Example: joinbench priors nearest --dataset materials --component albedo --n 64 --pool 4096 --out nearest.png
    """
    import shlex
    import sys

    from .nearest import NearestConfig, nearest_check, summarise, write_nearest

    if fmt not in ("png", "jpg"):
        raise JoinbenchError(f"--format takes png or jpg, got {fmt!r}.")
    if component == "all" and out.suffix:
        raise JoinbenchError(f"--out {out}: with --component all give a folder (each prior gets <dataset>-<component>-nearest.{fmt}).")
    if component != "all" and (out.suffix.lower() not in (".png", ".jpg", ".jpeg") or out.is_dir()):
        raise JoinbenchError(f"--out {out}: give a .png or .jpg file (the distances are written beside it as .json).")
    cfg = NearestConfig(dataset=dataset, component=component, n=n, pool=pool, reference=reference, seed=seed,
                        batch=batch, device=device, path=str(path) if path is not None else None)
    command = shlex.join(["joinbench", *sys.argv[1:]])
    for result in nearest_check(cfg, progress=not quiet):
        name = result["prior"].component
        target = out / f"{dataset}-{name}-nearest.{fmt}" if component == "all" else out
        png, js = write_nearest(result, target, command=command)
        s = summarise(result)
        line = f"{dataset}-{name}: nearest LPIPS of {n} samples in {pool} training images: median {s['samples']['median']:.3f}"
        if "reference" in s:
            line += (f" (held-out procedural images: {s['reference']['median']:.3f}); {s['samples_below_reference_min']} "
                     f"of {n} samples closer to a training image than any held-out image is ({s['reference']['min']:.3f})")
        typer.echo(line)
        typer.echo(f"wrote {png} and {js}")

__all__ = ["priors_app"]
