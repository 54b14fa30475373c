"""Command line for GAN priors and their encoders: ``joinbench train prior|encoder|unet`` and
``joinbench priors info|sample|eval``.

Two typer apps, mounted by :mod:`joinbench.cli`. Heavy imports happen inside the commands so
``joinbench --help`` stays fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import JoinbenchError

train_app = typer.Typer(no_args_is_help=True, help="Train joinbench's own models (GAN priors, encoders, the U-Net baseline).")
priors_app = typer.Typer(no_args_is_help=True, help="Inspect, sample and evaluate GAN priors.")


@train_app.callback()
def _train_root() -> None:
    """Train joinbench's own models (GAN priors, encoders, the U-Net baseline)."""


@priors_app.callback()
def _priors_root() -> None:
    """Inspect, sample and evaluate GAN priors."""


@train_app.command("prior")
def train_prior_cmd(
    dataset: str = typer.Option(..., "--dataset", "-d", help="procedural dataset: materials | faces"),
    component: str = typer.Option(..., "--component", "-c", help="albedo | shading | specular | all (the three, one process) | joint (one 9-channel GAN)"),
    kimg: float = typer.Option(5000.0, "--kimg", help="training length in thousands of images"),
    batch: int = typer.Option(32, "--batch", "-b", help="images per step"),
    resolution: int = typer.Option(64, "--resolution", "-r", help="power of two, 16..512"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default runs/priors/<dataset>-<component>-<resolution>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the checkpoint in --out"),
    seed: int = typer.Option(0, "--seed", help="seed of weights, latents and the data stream"),
    r1_gamma: Optional[float] = typer.Option(None, "--r1-gamma", help="R1 weight (default: StyleGAN2-ADA auto, 0.0002 res^2 / batch)"),
    lr: float = typer.Option(0.0025, "--lr", help="Adam learning rate (G and D)"),
    snapshot_kimg: float = typer.Option(100.0, "--snapshot-kimg", help="checkpoint and sample grid every N kimg"),
    log_kimg: float = typer.Option(4.0, "--log-kimg", help="log.jsonl line every N kimg"),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="time budget: checkpoint and export after this many minutes of training (resume later with --resume)"),
    render_chunk: Optional[int] = typer.Option(None, "--render-chunk", help="images rendered per call of the procedural generator (default: one batch); the data do not change"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
):
    """Train the GAN prior(s) of a procedural dataset; exports <dataset>-<component>-{G,D}.safetensors + .json.

    Example: joinbench train prior --dataset materials --component all --kimg 2000
    """
    from .train import TrainConfig, train_prior

    cfg = TrainConfig(dataset=dataset, component=component, kimg=kimg, batch=batch, resolution=resolution,
                      device=device, out=str(out) if out is not None else None, seed=seed, r1_gamma=r1_gamma, lr=lr,
                      snapshot_kimg=snapshot_kimg, log_kimg=log_kimg, progress=not quiet, minutes=minutes,
                      render_chunk=render_chunk)
    folder = train_prior(cfg, resume=resume)
    for name in cfg.model_names():
        typer.echo(f"exported {folder / f'{dataset}-{name}'}-G.safetensors, -D.safetensors, .json")
    typer.echo(f"to ship: copy those files into joinbench/weights/, then `joinbench priors eval --dataset {dataset} --component {component}`")


@train_app.command("unet")
def train_unet_cmd(
    dataset: str = typer.Option(..., "--dataset", "-d", help="procedural dataset: materials | faces"),
    kimg: float = typer.Option(1000.0, "--kimg", help="training length in thousands of images"),
    batch: int = typer.Option(32, "--batch", "-b", help="images per step"),
    resolution: int = typer.Option(64, "--resolution", "-r", help="power of two, 16..512"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default runs/unet/<dataset>-<resolution>)"),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="time budget: stop and export after this many minutes"),
    lpips_weight: float = typer.Option(1.0, "--lpips-weight", help="weight of LPIPS-Alex per component (0: L1 + re-render only)"),
    seed: int = typer.Option(0, "--seed", help="seed of the weights and the data stream"),
    width: int = typer.Option(16, "--width", help="base width of the U-Net (channels double per level)"),
    levels: int = typer.Option(4, "--levels", help="U-Net resolution levels"),
    lr: float = typer.Option(2e-3, "--lr", help="Adam learning rate (cosine decay to 5%)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
):
    """Train the supervised U-Net baseline; exports <dataset>-unet.safetensors (fp16) + <dataset>-unet.json.

    Example: joinbench train unet --dataset materials --kimg 1000
    """
    import json

    from joinbench.baselines.unet import (
        UNet,
        UNetTrainConfig,
        count_parameters,
        train_unet,
    )

    cfg = UNetTrainConfig(dataset=dataset, kimg=kimg, batch=batch, resolution=resolution, base_width=width,
                          levels=levels, lr=lr, lpips_weight=lpips_weight, seed=seed, device=device,
                          out=str(out) if out is not None else None, minutes=minutes, progress=not quiet)
    n = count_parameters(UNet(cfg.net_config()))
    typer.echo(f"U-Net width {width}, {levels} levels: {n:,} parameters, {2 * n / 1e6:.2f} MB as float16")
    path = train_unet(cfg)
    sidecar = path.with_suffix(".json")
    info = json.loads(sidecar.read_text())
    typer.echo(f"exported {path} ({path.stat().st_size / 1e6:.2f} MB) and {sidecar.name}: "
               f"{info['images_seen']:,} images in {info['wall_time_s']:.0f} s "
               f"({info['throughput_images_per_s']:.1f} img/s), final loss {info['final_losses'].get('loss', float('nan')):.4f}")
    typer.echo(f"to ship: copy both files into joinbench/weights/, then `joinbench run --method unet --dataset {dataset}`")


@train_app.command("encoder")
def train_encoder_cmd(
    dataset: str = typer.Option(..., "--dataset", "-d", help="procedural dataset: materials | faces"),
    component: str = typer.Option("all", "--component", "-c", help="albedo | shading | specular | all (the three, one process) | joint (the joint prior's encoder)"),
    kimg: float = typer.Option(200.0, "--kimg", help="training length in thousands of images"),
    batch: int = typer.Option(16, "--batch", "-b", help="images per step"),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", help="encoder input resolution (default: the prior's)"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default runs/encoders/<dataset>-<component>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the checkpoint in --out"),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="time budget: checkpoint and export after this many minutes of training (resume later with --resume)"),
    priors_path: Optional[Path] = typer.Option(None, "--priors-path", help="folder of the GAN priors (default: the shipped joinbench/weights)"),
    gain_images: int = typer.Option(8, "--gain-images", help="test images for the stage-1 gain in the sidecar"),
    gain_steps: int = typer.Option(100, "--gain-steps", help="stage-1 steps of the gain measurement (0: skip it)"),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (constant)"),
    perceptual: str = typer.Option("lpips-vgg", "--perceptual", help="lpips-vgg | none (pixel MSE only; also used by the gain measurement)"),
    perceptual_weight: float = typer.Option(0.8, "--perceptual-weight", help="weight of LPIPS-VGG next to the pixel MSE (pSp: 0.8)"),
    seed: int = typer.Option(0, "--seed", help="seed of the weights and the data stream"),
    snapshot_kimg: float = typer.Option(20.0, "--snapshot-kimg", help="checkpoint every N kimg"),
    render_chunk: Optional[int] = typer.Option(None, "--render-chunk", help="images rendered per call of the procedural generator (default: the batch on CPU, 4096 on CUDA)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
):
    """Train the stage-1 initialisation encoder(s) of a prior; exports <dataset>-<component>-encoder.safetensors + .json.

    Example: joinbench train encoder --dataset materials --component all --kimg 200
    """
    import json

    from ..join.encoder import EncoderTrainConfig, export_stem, train_encoders

    cfg = EncoderTrainConfig(dataset=dataset, component=component, kimg=kimg, batch=batch, resolution=resolution,
                             device=device, out=str(out) if out is not None else None, minutes=minutes,
                             priors_path=str(priors_path) if priors_path is not None else None, gain_images=gain_images,
                             gain_steps=gain_steps, lr=lr, perceptual=perceptual, perceptual_weight=perceptual_weight, seed=seed,
                             snapshot_kimg=snapshot_kimg, render_chunk=render_chunk, progress=not quiet)
    folder = train_encoders(cfg, resume=resume)
    names = cfg.resolved().names()
    for name in names:
        sidecar = folder / f"{export_stem(dataset, name)}.json"
        info = json.loads(sidecar.read_text())
        typer.echo(f"exported {sidecar.with_suffix('.safetensors')} ({info['size_bytes'] / 1e6:.2f} MB, {info['params']:,} params) "
                   f"and {sidecar.name}: {info['images_seen']:,} images in {info['wall_time_s']:.0f} s, "
                   f"final loss {info['final_losses'].get('loss', float('nan')):.4f}")
        gain = info.get("stage1_gain")
        if gain:
            saved = gain["steps_saved"]
            typer.echo(f"  stage-1 gain ({gain['images']} test images, {gain['steps']} steps): final loss ratio "
                       f"encoder/mean {gain['final_loss_ratio']}, "
                       + (f"saves {saved} steps" if saved is not None else "does not reach the mean-init final loss"))
    typer.echo("to ship: copy those files into joinbench/weights/ (an encoder loads only with the prior it was trained against)")


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
    from .train import _grid_rows

    if n < 1:
        raise JoinbenchError(f"--n must be at least 1 (got {n}).")
    prior = load_prior(dataset, component, device, path)
    images = prior.sample(n, seed=seed, truncation_psi=psi).cpu()
    rows = _grid_rows(images, prior.component)
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
    out: Path = typer.Option(..., "--out", "-o", help="PNG file (a folder for --component all: <dataset>-<component>-nearest.png each); the distances go beside each as .json"),
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

    if component == "all" and out.suffix:
        raise JoinbenchError(f"--out {out}: with --component all give a folder (each prior gets <dataset>-<component>-nearest.png).")
    if component != "all" and (out.suffix.lower() != ".png" or out.is_dir()):
        raise JoinbenchError(f"--out {out}: give a .png file (the distances are written beside it as .json).")
    cfg = NearestConfig(dataset=dataset, component=component, n=n, pool=pool, reference=reference, seed=seed,
                        batch=batch, device=device, path=str(path) if path is not None else None)
    command = shlex.join(["joinbench", *sys.argv[1:]])
    for result in nearest_check(cfg, progress=not quiet):
        name = result["prior"].component
        target = out / f"{dataset}-{name}-nearest.png" if component == "all" else out
        png, js = write_nearest(result, target, command=command)
        s = summarise(result)
        line = f"{dataset}-{name}: nearest LPIPS of {n} samples in {pool} training images: median {s['samples']['median']:.3f}"
        if "reference" in s:
            line += (f" (held-out procedural images: {s['reference']['median']:.3f}); {s['samples_below_reference_min']} "
                     f"of {n} samples closer to a training image than any held-out image is ({s['reference']['min']:.3f})")
        typer.echo(line)
        typer.echo(f"wrote {png} and {js}")

__all__ = ["priors_app", "train_app"]
