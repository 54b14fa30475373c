"""``joinbench train prior|encoder|unet``: one command group for every model joinbench trains.

A typer app mounted by :mod:`joinbench.cli`. Each command builds its family's config and
calls its training (``gan.train``, ``join.encoder``, ``baselines.unet``), which all run in the
training wing. Heavy imports happen inside the commands so ``joinbench --help`` stays fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

train_app = typer.Typer(no_args_is_help=True, help="Train joinbench's own models (GAN priors, encoders, the U-Net baseline).")

INIT_HELP = ("continue exported weights: 'shipped' (joinbench/weights) or a folder of exports; images seen and the "
             "sidecar's history add up")
# options every training command spells the same way
DATASET = typer.Option(..., "--dataset", "-d", help="procedural dataset: materials | faces")
RESOLUTION = typer.Option(64, "--resolution", "-r", help="power of two, 16..512")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N")
RESUME = typer.Option(False, "--resume", help="continue the checkpoint in --out")
INIT_FROM = typer.Option(None, "--init-from", help=INIT_HELP)
POOL_SIZE = typer.Option(None, "--pool-size", help="images kept rendered on the device (default: 16384 on CUDA, 8 batches elsewhere)")
QUIET = typer.Option(False, "--quiet", "-q", help="no progress bar")


@train_app.callback()
def _train_root() -> None:
    """Train joinbench's own models (GAN priors, encoders, the U-Net baseline)."""


@train_app.command("prior")
def train_prior_cmd(
    dataset: str = DATASET,
    component: str = typer.Option(..., "--component", "-c", help="albedo | shading | specular | all (the three, one fused bank) | joint (one 9-channel GAN)"),
    kimg: float = typer.Option(5000.0, "--kimg", help="training length in thousands of images"),
    batch: int = typer.Option(32, "--batch", "-b", help="images per step (256..1024 on a GPU; lr stays 0.0025, gamma and EMA follow StyleGAN2-ADA's auto rule)"),
    resolution: int = RESOLUTION,
    device: str = DEVICE,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default runs/priors/<dataset>-<component>-<resolution>)"),
    resume: bool = RESUME,
    init_from: Optional[str] = INIT_FROM,
    seed: int = typer.Option(0, "--seed", help="seed of weights, latents and the data"),
    r1_gamma: Optional[float] = typer.Option(None, "--r1-gamma", help="R1 weight (default: StyleGAN2-ADA auto, 0.0002 res^2 / batch)"),
    lr: float = typer.Option(0.0025, "--lr", help="Adam learning rate (G and D)"),
    snapshot_kimg: float = typer.Option(100.0, "--snapshot-kimg", help="checkpoint and sample grid every N kimg"),
    log_kimg: float = typer.Option(4.0, "--log-kimg", help="log.jsonl line every N kimg"),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="time budget: checkpoint and export after this many minutes of training (resume later with --resume)"),
    render_chunk: Optional[int] = typer.Option(None, "--render-chunk", help="images per render call of the procedural generator (default: 4096 on CUDA, the pool elsewhere); the data do not change"),
    pool_size: Optional[int] = POOL_SIZE,
    pool_refresh: float = typer.Option(0.25, "--pool-refresh", help="fraction of the pool re-rendered at a time"),
    pool_reuse: float = typer.Option(4.0, "--pool-reuse", help="times each pooled image is drawn, on average, before it is replaced"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 (TF32 on CUDA; fewest launches) | bf16 (autocast forward passes)"),
    cuda_graphs: Optional[bool] = typer.Option(None, "--cuda-graphs/--no-cuda-graphs", help="capture the G, D, R1 and EMA steps as CUDA graphs (default: on with CUDA)"),
    quiet: bool = QUIET,
):
    """Train the GAN prior(s) of a procedural dataset; exports <dataset>-<component>-{G,D}.safetensors + .json.

    Example: joinbench train prior --dataset materials --component all --kimg 2000 --batch 512 --init-from shipped
    """
    from ..gan.train import TrainConfig, train_prior

    cfg = TrainConfig(dataset=dataset, component=component, kimg=kimg, batch=batch, resolution=resolution,
                      device=device, out=str(out) if out is not None else None, seed=seed, r1_gamma=r1_gamma, lr=lr,
                      snapshot_kimg=snapshot_kimg, log_kimg=log_kimg, progress=not quiet, minutes=minutes,
                      render_chunk=render_chunk, pool_size=pool_size, pool_refresh=pool_refresh, pool_reuse=pool_reuse,
                      precision=precision, cuda_graphs=cuda_graphs, init_from=init_from)
    folder = train_prior(cfg, resume=resume)
    for name in cfg.model_names():
        typer.echo(f"exported {folder / f'{dataset}-{name}'}-G.safetensors, -D.safetensors, .json")
    typer.echo(f"to ship: copy those files into joinbench/weights/, then `joinbench priors eval --dataset {dataset} --component {component}`")


@train_app.command("unet")
def train_unet_cmd(
    dataset: str = DATASET,
    kimg: float = typer.Option(1000.0, "--kimg", help="training length in thousands of images"),
    batch: int = typer.Option(32, "--batch", "-b", help="images per step"),
    resolution: int = RESOLUTION,
    device: str = DEVICE,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default runs/unet/<dataset>-<resolution>)"),
    resume: bool = RESUME,
    init_from: Optional[str] = INIT_FROM,
    minutes: Optional[float] = typer.Option(None, "--minutes", help="time budget: stop and export after this many minutes"),
    lpips_weight: float = typer.Option(1.0, "--lpips-weight", help="weight of LPIPS-Alex per component (0: L1 + re-render only)"),
    seed: int = typer.Option(0, "--seed", help="seed of the weights and the data"),
    width: int = typer.Option(16, "--width", help="base width of the U-Net (channels double per level)"),
    levels: int = typer.Option(4, "--levels", help="U-Net resolution levels"),
    lr: float = typer.Option(2e-3, "--lr", help="Adam learning rate (cosine decay to 5%)"),
    pool_size: Optional[int] = POOL_SIZE,
    quiet: bool = QUIET,
):
    """Train the supervised U-Net baseline; exports <dataset>-unet.safetensors (fp16) + <dataset>-unet.json.

    Example: joinbench train unet --dataset materials --kimg 1000 --init-from shipped
    """
    import json

    from joinbench.baselines.unet import UNet, UNetTrainConfig, count_parameters, train_unet

    cfg = UNetTrainConfig(dataset=dataset, kimg=kimg, batch=batch, resolution=resolution, base_width=width,
                          levels=levels, lr=lr, lpips_weight=lpips_weight, seed=seed, device=device,
                          out=str(out) if out is not None else None, minutes=minutes, progress=not quiet,
                          pool_size=pool_size, init_from=init_from)
    n = count_parameters(UNet(cfg.net_config()))
    typer.echo(f"U-Net width {width}, {levels} levels: {n:,} parameters, {2 * n / 1e6:.2f} MB as float16")
    path = train_unet(cfg, resume=resume)
    sidecar = path.with_suffix(".json")
    info = json.loads(sidecar.read_text())
    rate = info.get("throughput_images_per_s")
    typer.echo(f"exported {path} ({path.stat().st_size / 1e6:.2f} MB) and {sidecar.name}: "
               f"{info['images_seen']:,} images in {info['wall_time_s']:.0f} s "
               f"({'-' if rate is None else f'{rate:.1f}'} img/s), final loss {info['final_losses'].get('loss', float('nan')):.4f}")
    typer.echo(f"to ship: copy both files into joinbench/weights/, then `joinbench run --method unet --dataset {dataset}`")


@train_app.command("encoder")
def train_encoder_cmd(
    dataset: str = DATASET,
    component: str = typer.Option("all", "--component", "-c", help="albedo | shading | specular | all (the three, one process) | joint (the joint prior's encoder)"),
    kimg: float = typer.Option(200.0, "--kimg", help="training length in thousands of images"),
    batch: int = typer.Option(16, "--batch", "-b", help="images per step"),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", help="encoder input resolution (default: the prior's)"),
    device: str = DEVICE,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default runs/encoders/<dataset>-<component>)"),
    resume: bool = RESUME,
    init_from: Optional[str] = typer.Option(None, "--init-from", help=INIT_HELP + " (also against retrained priors: re-bound to the prior in use)"),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="time budget: checkpoint and export after this many minutes of training (resume later with --resume)"),
    priors_path: Optional[Path] = typer.Option(None, "--priors-path", help="folder of the GAN priors (default: the shipped joinbench/weights)"),
    gain_images: int = typer.Option(8, "--gain-images", help="test images for the stage-1 gain in the sidecar"),
    gain_steps: int = typer.Option(100, "--gain-steps", help="stage-1 steps of the gain measurement (0: skip it)"),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (constant)"),
    perceptual: str = typer.Option("lpips-vgg", "--perceptual", help="lpips-vgg | none (pixel MSE only; also used by the gain measurement)"),
    perceptual_weight: float = typer.Option(0.8, "--perceptual-weight", help="weight of LPIPS-VGG next to the pixel MSE (pSp: 0.8)"),
    seed: int = typer.Option(0, "--seed", help="seed of the weights and the data"),
    snapshot_kimg: float = typer.Option(20.0, "--snapshot-kimg", help="checkpoint every N kimg"),
    render_chunk: Optional[int] = typer.Option(None, "--render-chunk", help="images per render call of the procedural generator (default: 4096 on CUDA, the pool elsewhere)"),
    pool_size: Optional[int] = POOL_SIZE,
    quiet: bool = QUIET,
):
    """Train the stage-1 initialisation encoder(s) of a prior; exports <dataset>-<component>-encoder.safetensors + .json.

    Example: joinbench train encoder --dataset materials --component all --kimg 200 --init-from shipped
    """
    import json

    from ..join.encoder import EncoderTrainConfig, export_stem, train_encoders

    cfg = EncoderTrainConfig(dataset=dataset, component=component, kimg=kimg, batch=batch, resolution=resolution,
                             device=device, out=str(out) if out is not None else None, minutes=minutes,
                             priors_path=str(priors_path) if priors_path is not None else None, gain_images=gain_images,
                             gain_steps=gain_steps, lr=lr, perceptual=perceptual, perceptual_weight=perceptual_weight, seed=seed,
                             snapshot_kimg=snapshot_kimg, render_chunk=render_chunk, pool_size=pool_size,
                             init_from=init_from, progress=not quiet)
    folder = train_encoders(cfg, resume=resume)
    for name in cfg.resolved().names():
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


__all__ = ["train_app"]
