"""Tiny random GAN priors (and encoders) for the JoIN tests, exported into a folder.

The tests of stage 1, PTI, the full method, encoders, relighting and timing must be fast
and must not depend on the shipped 64 px priors (retraining those must not move a test), so
they export tiny random StyleGAN2 priors (16 px, w_dim 16,
at most 16 channels) and load them back like real ones. Import with
``from .tiny_world import ...`` (tests run with ``--import-mode=importlib``).

Each prior is built inside ``torch.random.fork_rng`` from its own seed, so the weights
depend on the seed alone and the global RNG is left as it was. Tests compare numbers: the
seeds and the order of the random draws (generator, discriminator, w_avg, encoder, its
head) fix the weights and must not change.
"""
from __future__ import annotations

from pathlib import Path

import torch

from joinbench.gan.bank import read_sidecar, sidecar_path
from joinbench.gan.model import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from joinbench.gan.train import export_prior
from joinbench.join.encoder import Encoder, EncoderConfig, export_encoder

RES, WDIM = 16, 16
TINY = dict(channel_base=256, channel_max=16)
COMPONENTS = ("albedo", "shading", "specular")
WITH_JOINT = (*COMPONENTS, "joint")  # the joint prior: one 9-channel generator (albedo | shading | specular)


def channels_of(component: str) -> int:
    return 9 if component == "joint" else 3


def tiny_generator(channels: int = 3) -> Generator:
    return Generator(GeneratorConfig(resolution=RES, z_dim=WDIM, w_dim=WDIM, img_channels=channels, **TINY))


def tiny_discriminator(channels: int = 3) -> Discriminator:
    return Discriminator(DiscriminatorConfig(resolution=RES, img_channels=channels, **TINY))


@torch.no_grad()
def liven_(G: Generator, noise_strength: float | None = 0.2, w_avg_std: float | None = 0.1) -> Generator:
    """Give an untrained generator what a trained one has: noise maps that matter for the
    image (a fresh one has noise strength 0) and a mean latent ``w_avg`` away from zero
    (drawn from N(0, w_avg_std)). ``None`` leaves that part as it is."""
    if noise_strength is not None:
        for conv in G.synthesis.convs:
            conv.noise_strength.fill_(noise_strength)
    if w_avg_std is not None:
        G.mapping.w_avg.normal_(0, w_avg_std)
    return G


def tiny_encoder(G: Generator, head: tuple[float, float] | None = None) -> Encoder:
    """A tiny encoder anchored on ``G`` (``w = G.w_avg + 0.3 * head(...)``). ``head`` =
    (weight std, bias std) draws a random head, so its latents differ from the mean
    latent; ``None`` keeps the zero-initialised head (it predicts ``w_avg``)."""
    enc = Encoder(EncoderConfig(resolution=RES, w_dim=WDIM, stem_width=8, widths=(8, 8)))
    if head is not None:
        with torch.no_grad():
            enc.head.weight.normal_(0, head[0])
            enc.head.bias.normal_(0, head[1])
    enc.set_latent_stats(G.mapping.w_avg, torch.full((WDIM,), 0.3))
    return enc


def export_tiny_prior(folder: Path, dataset: str, component: str, G: Generator, D: Discriminator,
                      encoder: Encoder | None = None) -> None:
    """Export one prior (and the encoder trained against it, if any) as training would."""
    export_prior(folder, dataset, component, G, D, {"images_seen": 0, "forward_model": "reinhard"})
    if encoder is not None:
        sha = read_sidecar(sidecar_path(dataset, component, folder), dataset, component)["sha256"]["G"]
        export_encoder(folder, dataset, component, encoder, {"prior": {"sha256": sha}})


def export_tiny_priors(folder: Path, *, seed: int, dataset: str = "materials",
                       components: tuple[str, ...] = COMPONENTS, noise_strength: float | None = 0.2,
                       w_avg_std: float | None = 0.1, encoders: bool = False,
                       encoder_head: tuple[float, float] | None = None) -> Path:
    """Export a random tiny prior for each of ``components`` (``"joint"``: 9 channels) into
    ``folder``; the i-th is drawn from seed ``seed + i``. ``noise_strength`` and
    ``w_avg_std`` go to :func:`liven_`; ``encoders`` adds an encoder for each prior
    (``encoder_head`` as in :func:`tiny_encoder`). Returns ``folder``."""
    for i, c in enumerate(components):
        ch = channels_of(c)
        enc = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + i)
            G = tiny_generator(ch)
            D = tiny_discriminator(ch)
            liven_(G, noise_strength, w_avg_std)
            if encoders:
                enc = tiny_encoder(G, encoder_head)
        export_tiny_prior(folder, dataset, c, G, D, enc)
    return folder
