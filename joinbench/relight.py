"""Relighting with an intrinsic decomposition: ``joinbench relight``.

Decompose an image into albedo, shading and specular, replace the lighting-dependent
layers (shading, and specular unless ``keep_specular``) by those of another image's
decomposition or by random samples of the shading (and specular) GAN prior, and render
the result with the method's forward model::

    relit = f(albedo_input, shading_new, specular_new)

The output is a strip per new lighting: input | albedo | new shading | relit image
(albedo sRGB-encoded, shading Reinhard-encoded, as the metrics see them). A good
decomposition keeps the material (albedo) and changes only the light: relighting an image
with its own shading gives back its re-rendering (tested).

Any registered method can decompose (``--method``, default ``join``), built by the planner
(:func:`joinbench.plan.prepare_method`: the weights of the dataset's domain or of ``--prior``,
the device's settings). Random shading needs a GAN bank: the one the method inverts
(:meth:`~joinbench.methods.join.JoinStage1.prior_source`), else the shipped bank of the
dataset's domain (``materials`` for files).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn.functional as F
import typer
from torch import Tensor

from .errors import JoinbenchError, did_you_mean
from .forward import ForwardModel
from .types import Decomposition


@dataclass
class Relit:
    """One relighting: the input, its albedo and, per new lighting, shading / specular / image."""

    image: Tensor  # (3, H, W) display input
    albedo: Tensor  # (3, H, W) linear
    shading: list[Tensor]  # linear, one per new lighting
    specular: list[Tensor | None]
    relit: list[Tensor]  # display images
    forward_model: ForwardModel
    decomposition: Decomposition
    sources: list[str] = field(default_factory=list)  # where each lighting came from

    def rows(self) -> list[list[Tensor]]:
        """input | albedo | new shading | relit, encoded for display."""
        fm = self.forward_model
        alb = fm.encode("albedo", self.albedo)
        return [[self.image, alb, fm.encode("shading", s), r] for s, r in zip(self.shading, self.relit)]


def prior_samples(method, n: int, seed: int = 0, psi: float = 0.7, size: int | None = None,
                  device: torch.device | str = "cpu", prior: str | None = None) -> tuple[list[Tensor], list[Tensor | None]]:
    """``n`` random (shading, specular) pairs, linear (3, size, size), from the ``prior`` domain's
    GAN bank (default: the bank the method inverts, else ``materials``): shading z from a CPU generator seeded
    ``seed``, specular from ``seed + 1``, truncation ``psi``. The joint prior gives both
    from one sample."""
    from .gan.bank import PriorError, load_bank

    own = method.prior_source() or {}
    dataset = prior or own.get("domain") or "materials"
    path, joint = own.get("path"), bool(own.get("joint", False))
    fm = method.forward_model
    comps = ("shading", "specular") if fm.use_specular else ("shading",)
    try:
        bank = load_bank(dataset, device, components=comps, path=path, joint=joint)
    except PriorError as exc:
        raise PriorError(f"--random-shading samples the {dataset} shading prior: {exc}") from None
    if joint:
        parts = bank["joint"].split(bank["joint"].sample(n, seed, psi))
        enc = {c: parts[c] for c in comps}
    else:
        enc = {c: bank[c].sample(n, seed + i, psi) for i, c in enumerate(comps)}
    lin = {c: fm.decode(c, e, clip=True) for c, e in enc.items()}
    if size is not None:
        lin = {c: F.interpolate(v, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_min(0.0)
               for c, v in lin.items()}
    shading = [s.cpu() for s in lin["shading"]]
    specular = [s.cpu() for s in lin["specular"]] if "specular" in lin else [None] * n
    return shading, specular


def relight(method, image: Tensor, *, shading_from: Tensor | None = None, random_shading: int = 0, seed: int = 0,
            psi: float = 0.7, keep_specular: bool = False, prior: str | None = None) -> Relit:
    """Relight ``image`` (3, H, W) display [0, 1] with the lighting of ``shading_from``
    (3, H, W; decomposed in the same batch) or of ``random_shading`` prior samples."""
    if (shading_from is None) == (random_shading <= 0):
        raise JoinbenchError("Give the new lighting: another image (--shading-from IMAGE2) or a number of random "
                             "prior samples (--random-shading N), not both.")
    if shading_from is not None and shading_from.shape != image.shape:
        raise JoinbenchError(f"The two images differ in size ({tuple(image.shape)} vs {tuple(shading_from.shape)}); "
                             "bring them to one resolution first.")
    batch = image[None] if shading_from is None else torch.stack([image, shading_from])
    dec = method.decompose(batch.to(method.device))
    if any(dec.errors or []):
        bad = next(e for e in dec.errors if e)
        raise JoinbenchError(f"The decomposition failed: {bad}")
    fm = dec.forward_model
    cpu = lambda t: None if t is None else t.detach().float().cpu()
    albedo, own_spec = cpu(dec.albedo[0]), cpu(dec.component("specular")[0])
    if shading_from is not None:
        shading = [cpu(dec.shading[1])]
        specular = [cpu(dec.component("specular")[1])]
        sources = ["shading-from image"]
    else:
        shading, specular = prior_samples(method, random_shading, seed, psi, size=image.shape[-1], device=method.device,
                                          prior=prior)
        sources = [f"prior sample {i} (seed {seed}, psi {psi:g})" for i in range(random_shading)]
    if keep_specular or not fm.use_specular:
        specular = [own_spec if fm.use_specular else None] * len(shading)
    relit = [fm.render(albedo[None], s[None], None if p is None else p[None])[0] for s, p in zip(shading, specular)]
    return Relit(image.detach().float().cpu(), albedo, shading, specular, relit, fm, dec, sources)


def _load_input(path: Path | None, dataset: str | None, index: int | None, resolution: int, what: str) -> Tensor:
    from .imageio import read_image, to_resolution

    if path is not None:
        img, _ = read_image(path)
        return to_resolution(img, resolution)
    from .plan import open_dataset

    ds = open_dataset(dataset, resolution, 0)
    if not 0 <= index < len(ds):
        raise JoinbenchError(f"{what} {index} is out of range: {dataset} has test images 0..{len(ds) - 1}.")
    img = ds[index].image
    return img if img.shape[-1] == resolution else to_resolution(img, resolution)


def relight_cmd(
    image: Optional[Path] = typer.Argument(None, help="image file to relight (or --dataset D --index i)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="take the image from this dataset's test split"),
    index: Optional[int] = typer.Option(None, "--index", "-i", help="with --dataset: which test image (default 0)"),
    shading_from: Optional[Path] = typer.Option(None, "--shading-from", help="image file whose lighting to use"),
    shading_index: Optional[int] = typer.Option(None, "--shading-index", help="with --dataset: the test image whose lighting to use"),
    random_shading: int = typer.Option(0, "--random-shading", help="N random lightings from the shading (and specular) prior"),
    out: Path = typer.Option(..., "--out", "-o", help="PNG strip: input | albedo | new shading | relit (one row per lighting)"),
    method: str = typer.Option("join", "--method", "-m", help="decomposition method (see `joinbench list methods`)"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    resolution: int = typer.Option(64, "--resolution", "-r", help="working resolution (square centre crop)"),
    seed: int = typer.Option(0, "--seed", help="seed of the random lightings"),
    psi: float = typer.Option(0.7, "--psi", help="truncation of the random lightings"),
    keep_specular: bool = typer.Option(False, "--keep-specular", help="keep the input's specular layer (default: swap it with the shading)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="override a method setting: key=value (repeatable)"),
    prior: Optional[str] = typer.Option(None, "--prior", help="GAN prior domain, materials | faces, for JoIN's bank and "
                                        "--random-shading (default: the --dataset's domain, else materials)"),
):
    """Relight an image: decompose it, swap in another image's or random shading, re-render.

    Example: joinbench relight photo.png --shading-from other.png --out relit.png
    """
    from joinbench.datasets.base import known_domains

    from .env import resolve_device
    from .method import parse_set_options
    from .plan import open_dataset, prepare_method
    from .viz import grid_image, save_image_atomic

    if (image is None) == (dataset is None):
        raise JoinbenchError("Name the image to relight: a file (joinbench relight IMAGE ...) or a test image "
                             f"(--dataset D --index i), {'not both' if image is not None else 'one of the two'}.")
    if index is not None and dataset is None:
        raise JoinbenchError("--index picks a test image of --dataset; an image file needs no --index.")
    index = 0 if index is None else index
    if shading_index is not None and dataset is None:
        raise JoinbenchError("--shading-index picks a test image of --dataset; give --dataset D (or use --shading-from IMAGE2).")
    if random_shading < 0:
        raise JoinbenchError(f"--random-shading N must be at least 1, got {random_shading}.")
    if sum(x is not None for x in (shading_from, shading_index)) + (random_shading > 0) != 1:
        raise JoinbenchError("Give exactly one new lighting: --shading-from IMAGE2, --shading-index J or --random-shading N.")
    if out.suffix.lower() != ".png":
        raise JoinbenchError(f"--out {out}: the strip is written as PNG; give a .png file name.")
    from joinbench.datasets.base import check_resolution

    check_resolution(resolution)
    domains = known_domains()
    if prior is not None and prior not in domains:
        raise JoinbenchError(f"Unknown --prior {prior!r}.{did_you_mean(prior, domains)} Use one of {', '.join(domains)}.")
    overrides = parse_set_options(set_)
    img = _load_input(image, dataset, index, resolution, "--index")
    src = None
    if shading_from is not None or shading_index is not None:
        src = _load_input(shading_from, dataset if shading_from is None else None, shading_index, resolution, "--shading-index")
    ds = open_dataset(dataset, resolution, 0) if dataset is not None else None
    domain = prior or (ds.domain if ds is not None else None)
    dev = resolve_device(device)
    m, notes = prepare_method(method, overrides, ds, dev)
    if prior is not None:
        m.use_domain(prior)  # e.g. JoIN inverts that domain's bank, unless --set chose one
    for note in notes:
        typer.echo(note)
    m.to(dev)
    result = relight(m, img, shading_from=src, random_shading=random_shading, seed=seed, psi=psi,
                     keep_specular=keep_specular, prior=domain)
    labels = ["input", "albedo", "new shading", "relit"]
    save_image_atomic(grid_image(result.rows(), labels, cell=max(64, resolution)), out)
    t = result.decomposition.timings
    spent = ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if not k.endswith("per_step"))
    typer.echo(f"wrote {out} ({len(result.relit)} lighting(s); {method}{': ' + spent if spent else ''})")


__all__ = ["Relit", "prior_samples", "relight", "relight_cmd"]
