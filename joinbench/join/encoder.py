"""Encoder-guided initialisation (JoIN's third ingredient; README, "Encoders"): image -> initial w_c.

Stage 1 starts every latent from the mean latent, so most of its 1000 steps are spent
walking to the right region of W. JoIN instead starts from per-component encoders (the
authors trained one pSp encoder per component, ``--learn_in_w --start_from_latent_avg``,
"for only one component without using any other component as supervision"). Here:

**Network** (:class:`Encoder`, :class:`EncoderConfig`): a compact ResNet. A 3x3 stem, then
one stage per entry of ``widths``, each a stride-2 pre-activation residual block (GroupNorm,
SiLU, 3x3 convs; average-pool + 1x1 skip) followed by ``blocks - 1`` stride-1 ones, then
GroupNorm, SiLU, global average pooling and a linear head. GroupNorm, not BatchNorm, so an
image's latent never depends on the other images of its batch (stage 1 promises batch
independence) and training and inference behave alike. The input is the display image
(B, 3, H, W) in [0, 1], resized (bilinear, antialiased) to ``resolution`` when it differs.
The output is an **absolute** latent ``w = w_avg + w_scale * head(features)``: ``w_avg`` is
the generator's tracked mean latent and ``w_scale`` the per-dimension RMS of mapped samples
around it, both buffers copied from the generator when training starts. The head is
zero-initialised, so an untrained encoder predicts exactly ``w_avg`` (pSp's
``start_from_latent_avg``) and its outputs are O(1) in units of the prior's own spread
whatever the latent scale; consumers just call ``enc(images) -> (B, w_dim)``. The default
size (~0.28M parameters at w_dim 128) keeps all eight encoders (materials and faces x
albedo, shading, specular, joint) under 6 MB as float16.

**Components**: ``albedo``, ``shading``, ``specular`` (one per generator of the
independent bank) and ``joint`` (one w for the jointly trained 9-channel prior, supervised
on all three components).

**Training** (:func:`train_encoders`, ``joinbench train encoder``): on the procedural
training data (the device-resident :class:`joinbench.training.data.DataPool` the priors
train from, rendered at the prior's resolution), with the prior frozen, per encoder::

    x   = (G_c(E_c(image), const noise) + 1) / 2          not clipped, so gradients reach E
    y   = encode(ground-truth component c)                 forward-model encoding, [0, 1]
    L   = pixel_weight * MSE(x, y) + perceptual_weight * LPIPS-VGG(x, y)

(for ``joint``: the mean of that loss over the three components). Each encoder sees only
its own component as supervision, as in the authors' runs. Defaults follow pSp's losses
(L2 1, LPIPS 0.8) with Adam at a constant learning rate 1e-3 (pSp uses Ranger at 1e-4; a
constant rate also lets a run be extended with a larger ``--kimg``); not tuned on the
shipped priors. ``component='all'`` trains the three component encoders interleaved on the
same batches. The run is the training wing's (:mod:`joinbench.training`): seeded weights
and data, checkpoints that ``--resume`` continues exactly, ``--minutes``, Ctrl-C.
``--init-from shipped`` (or a folder) continues exported encoders, also against a retrained
prior: the weights carry over, the latent statistics (``w_avg``, ``w_scale``) are re-anchored
on the prior in use and the new sidecar is bound to that prior's sha256; images seen and the
history accumulate.

**Export**: ``<dataset>-<component>-encoder.safetensors`` (parameters float16; the two
latent-statistics buffers float32, because ``w_avg`` anchors every prediction and fp16
would move it by ~1e-3 relative) and the sidecar ``<dataset>-<component>-encoder.json``:
network config, the sha256 of the weights file and of the prior's generator it was trained
against, images seen, wall time, device, commit, versions, final losses and the **stage-1
gain**: on ``gain_images`` held-out test images, stage 1 (:class:`JointInverter`,
``gain_steps`` steps) runs once from the mean latent and once from the encoder's latents
(using the exported, fp16-rounded weights), and the mean loss of both runs is recorded at
a few steps, with how many steps the encoder saves. ``gain_steps=0`` skips it.

**Loading** (:func:`load_encoders`): from ``joinbench/weights/`` or a folder, checking the
sha256 recorded in the sidecar, every tensor shape, and that the encoder was trained
against the prior now in use (a retrained prior makes its old encoders meaningless).
Problems are one-line :class:`EncoderError` messages.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import JoinbenchError
from ..forward import COMPONENTS
from ..gan.model import ConfigDict

FORMAT = "joinbench-encoder"
ENCODER_COMPONENTS = (*COMPONENTS, "joint")
TRAIN_COMPONENTS = (*COMPONENTS, "all", "joint")
# Settings that change the optimisation: a resumed run must keep them (kimg may grow).
_RESUME_KEYS = ("dataset", "component", "batch", "resolution", "lr", "beta1", "beta2", "pixel_weight", "perceptual",
                "perceptual_weight", "seed", "stem_width", "widths", "blocks", "stats_samples", "pool_size", "pool_refresh",
                "pool_reuse")


class EncoderError(JoinbenchError):
    """An encoder that is missing, corrupt, or belongs to another prior."""


# ---------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------
def _groups(ch: int) -> int:
    for g in (8, 4, 2):
        if ch % g == 0:
            return g
    return 1


@dataclass
class EncoderConfig(ConfigDict):
    """Encoder hyper-parameters. ``widths``: one stride-2 stage each (so the input is pooled
    ``2 ** len(widths)`` times before the global pool); ``blocks`` residual blocks per stage."""

    resolution: int = 64  # input resolution; other sizes are resized to it
    w_dim: int = 128  # the generator's latent size
    in_channels: int = 3
    stem_width: int = 32
    widths: tuple[int, ...] = (32, 48, 64, 96)
    blocks: int = 1

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        if not self.widths or min(self.widths) < 1 or self.stem_width < 1 or self.blocks < 1 or self.w_dim < 1:
            raise EncoderError(f"Encoder needs widths, stem_width, blocks and w_dim >= 1 (got widths {self.widths}, "
                               f"stem {self.stem_width}, blocks {self.blocks}, w_dim {self.w_dim}).")
        if self.resolution < 2 ** len(self.widths):
            raise EncoderError(f"Encoder resolution {self.resolution} is below 2^{len(self.widths)} (one halving per "
                               "width); use a larger --resolution or fewer widths.")


class ResBlock(nn.Module):
    """Pre-activation residual block: GN-SiLU-conv3x3(stride)-GN-SiLU-conv3x3, plus a skip
    (identity, or average-pool and 1x1 conv when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.stride = stride
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if (cin != cout or stride != 1) else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        s = x
        if self.stride != 1:
            s = F.avg_pool2d(s, self.stride, ceil_mode=True)
        if self.skip is not None:
            s = self.skip(s)
        return s + h


class Encoder(nn.Module):
    """(B, 3, H, W) display image in [0, 1] -> absolute latent w (B, w_dim) of one generator.

    Attributes set by :func:`load_encoders` (not part of the weights): ``dataset``,
    ``component``, ``sidecar`` (dict) and ``prior_sha256``."""

    def __init__(self, config: EncoderConfig | None = None):
        super().__init__()
        cfg = config or EncoderConfig()
        self.config = cfg
        self.stem = nn.Conv2d(cfg.in_channels, cfg.stem_width, 3, padding=1)
        blocks, cin = [], cfg.stem_width
        for w in cfg.widths:
            blocks.append(ResBlock(cin, w, stride=2))
            blocks.extend(ResBlock(w, w) for _ in range(cfg.blocks - 1))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.GroupNorm(_groups(cin), cin)
        self.head = nn.Linear(cin, cfg.w_dim)
        nn.init.zeros_(self.head.weight)  # an untrained encoder predicts w_avg (pSp's start_from_latent_avg)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        self.register_buffer("w_scale", torch.ones(cfg.w_dim))
        self.dataset: str | None = None
        self.component: str | None = None
        self.sidecar: dict[str, Any] = {}
        self.prior_sha256: str | None = None

    w_dim = property(lambda self: self.config.w_dim)
    resolution = property(lambda self: self.config.resolution)

    @torch.no_grad()
    def set_latent_stats(self, w_avg: Tensor, w_scale: Tensor) -> None:
        """Anchor the output on a generator: ``w = w_avg + w_scale * head(...)``."""
        self.w_avg.copy_(w_avg.reshape(-1).to(self.w_avg))
        self.w_scale.copy_(w_scale.reshape(-1).to(self.w_scale).clamp_min(1e-6))

    def features(self, images: Tensor) -> Tensor:
        """Pooled features (B, widths[-1]) of display images (resized to ``resolution``)."""
        cfg = self.config
        if images.ndim != 4 or images.shape[1] != cfg.in_channels:
            raise EncoderError(f"The encoder expects (B, {cfg.in_channels}, H, W) images, got {tuple(images.shape)}.")
        x = images.to(self.stem.weight.dtype)
        if tuple(x.shape[-2:]) != (cfg.resolution, cfg.resolution):
            x = F.interpolate(x, size=(cfg.resolution, cfg.resolution), mode="bilinear", antialias=True,
                              align_corners=False)
        x = self.blocks(self.stem(x * 2.0 - 1.0))
        return F.silu(self.norm(x)).mean(dim=(2, 3))

    def forward(self, images: Tensor) -> Tensor:
        return self.w_avg + self.w_scale * self.head(self.features(images))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def latent_stats(G, n: int = 10_000, seed: int = 0, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """(w_avg, w_scale) of a generator: its tracked ``mapping.w_avg`` and the per-dimension
    RMS of ``n`` mapped samples (psi 1, z from a CPU generator seeded ``seed``) around it."""
    dev = next(G.parameters()).device
    w_avg = G.mapping.w_avg.detach().float().to(dev)
    gen = torch.Generator().manual_seed(int(seed))
    total, done = torch.zeros_like(w_avg, dtype=torch.float64), 0
    while done < n:
        m = min(chunk, n - done)
        z = torch.randn(m, G.z_dim, generator=gen).to(dev)
        total += (G.mapping(z).float() - w_avg).square().double().sum(0)
        done += m
    return w_avg.cpu(), (total / max(n, 1)).sqrt().float().cpu()


# ---------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------
def export_stem(dataset: str, component: str) -> str:
    return f"{dataset}-{component}-encoder"


def encoder_weights_dir() -> Path:
    """Where shipped encoders live (the same folder as the shipped priors)."""
    from ..gan.bank import weights_dir

    return weights_dir()


def encoder_paths(dataset: str, component: str, path: str | Path | None = None) -> tuple[Path, Path]:
    """(weights, sidecar) of an encoder in ``path`` (a folder, or a file inside it) or the shipped weights."""
    folder = encoder_weights_dir() if path is None else Path(path).expanduser()
    if folder.suffix in (".json", ".safetensors"):
        folder = folder.parent
    stem = export_stem(dataset, component)
    return folder / f"{stem}.safetensors", folder / f"{stem}.json"


def _how_to_get(dataset: str, component: str) -> str:
    comp = "" if component in COMPONENTS else f" --component {component}"
    return (f"train it with `joinbench train encoder --dataset {dataset}{comp}` and copy the exported "
            f"{export_stem(dataset, component)}.safetensors/.json into {encoder_weights_dir()} (or pass their folder)")


def encoder_tensors(encoder: Encoder) -> dict[str, Tensor]:
    """What is exported: parameters as float16, the latent statistics as float32."""
    stats = {"w_avg", "w_scale"}
    return {k: v.detach().to("cpu", torch.float32 if k in stats else torch.float16).contiguous()
            for k, v in encoder.state_dict().items()}


def _write_weights(out: Path, dataset: str, component: str, encoder: Encoder) -> tuple[Path, str]:
    from safetensors.torch import save

    from ..env import sha256_file, write_atomic

    meta = {"format": FORMAT, "dataset": dataset, "component": component, "dtype": "float16"}
    path = write_atomic(out / f"{export_stem(dataset, component)}.safetensors", save(encoder_tensors(encoder), metadata=meta))
    return path, sha256_file(path)


def _write_sidecar(out: Path, dataset: str, component: str, encoder: Encoder, weights: Path, sha: str,
                   info: dict[str, Any]) -> Path:
    from ..env import write_json

    sidecar = {
        "format": FORMAT, "version": 1, "dataset": dataset, "component": component,
        "channels": list(COMPONENTS) if component == "joint" else [component],
        "network": encoder.config.to_dict(), "params": count_parameters(encoder),
        "output": "absolute W latent (B, w_dim) of the prior's generator: w_avg + w_scale * head(features)",
        "input": "display image (B, 3, H, W) in [0, 1], resized to network.resolution",
        "dtype": "float16 (w_avg, w_scale: float32)", "file": weights.name, "sha256": sha,
        "size_bytes": weights.stat().st_size, **info,
    }
    return write_json(out / f"{export_stem(dataset, component)}.json", sidecar)


def export_encoder(out: str | Path, dataset: str, component: str, encoder: Encoder, info: dict[str, Any]) -> Path:
    """Write ``<dataset>-<component>-encoder.safetensors`` and its sidecar; returns the weights path.
    ``info`` should name the prior: ``{"prior": {"sha256": ...}, ...}``."""
    out = Path(out)
    weights, sha = _write_weights(out, dataset, component, encoder)
    _write_sidecar(out, dataset, component, encoder, weights, sha, info)
    return weights


def _read_sidecar(sidecar: Path, weights: Path, dataset: str, component: str) -> dict[str, Any]:
    if not sidecar.is_file():
        what = (f"its weights {weights} exist but the sidecar is missing, so their sha256 cannot be checked"
                if weights.is_file() else f"{weights} does not exist (expected sha256: unknown, no sidecar {sidecar.name})")
        raise EncoderError(f"No {dataset} {component} encoder: {what}; {_how_to_get(dataset, component)}.")
    try:
        sc = json.loads(sidecar.read_text())
        if not isinstance(sc, dict) or sc.get("format") != FORMAT:
            raise ValueError(f"format {FORMAT!r} expected")
        for key in ("network", "sha256", "prior"):
            if key not in sc:
                raise KeyError(key)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise EncoderError(f"{sidecar}: not a usable joinbench encoder sidecar ({type(exc).__name__}: {exc}); "
                           f"re-export it: {_how_to_get(dataset, component)}.") from None
    return sc


def _prior_sha(dataset: str, name: str, bank: Any, priors_path: str | Path | None) -> tuple[str, str]:
    """(sha256 of the prior's generator now in use, where it came from)."""
    if bank is not None:
        try:
            prior = bank[name]
        except (KeyError, JoinbenchError):
            raise EncoderError(f"The {name} encoder needs the {dataset} {name} prior, which the given bank lacks "
                               f"(it holds {', '.join(bank)}).") from None
        return (prior if isinstance(prior, str) else prior.sha256), "the given bank"
    from ..gan.bank import read_sidecar, sidecar_path

    p = sidecar_path(dataset, name, priors_path)
    return read_sidecar(p, dataset, name)["sha256"]["G"], str(p)


def load_encoder(dataset: str, component: str, device: str | torch.device = "cpu", path: str | Path | None = None,
                 *, bank: Any = None, priors_path: str | Path | None = None, check_prior: bool = True) -> Encoder:
    """One encoder (see :func:`load_encoders`)."""
    from ..weights_io import load_checked

    if component not in ENCODER_COMPONENTS:
        raise EncoderError(f"Unknown encoder component {component!r}; use one of {', '.join(ENCODER_COMPONENTS)}.")
    weights, sidecar = encoder_paths(dataset, component, path)
    sc = _read_sidecar(sidecar, weights, dataset, component)
    expected = sc["sha256"]
    if not weights.is_file():
        raise EncoderError(f"No {dataset} {component} encoder: {weights} does not exist (expected sha256 {expected}, "
                           f"from {sidecar.name}); {_how_to_get(dataset, component)}.")
    try:
        cfg = EncoderConfig.from_dict(sc["network"])
    except (TypeError, ValueError) as exc:
        raise EncoderError(f"{sidecar}: bad network config ({exc}); re-export: {_how_to_get(dataset, component)}.") from None
    trained_sha = (sc.get("prior") or {}).get("sha256")
    if check_prior:
        current, where = _prior_sha(dataset, component, bank, priors_path)
        if trained_sha != current:
            raise EncoderError(f"{weights} was trained against the {dataset} {component} prior with generator sha256 "
                               f"{trained_sha}, but the prior in use ({where}) has {current}; retrain it with "
                               f"`joinbench train encoder --dataset {dataset} --component {component}` "
                               "(--priors-path for priors outside joinbench/weights).")
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; leave the caller's RNG alone
        enc = Encoder(cfg)
    load_checked(enc, weights, expected, sidecar, EncoderError, _how_to_get(dataset, component))
    enc.dataset, enc.component, enc.sidecar, enc.prior_sha256 = dataset, component, sc, trained_sha
    from ..env import resolve_device

    return enc.to(resolve_device(device)).eval().requires_grad_(False)


def load_encoders(dataset: str, device: str | torch.device = "cpu",
                  components: Sequence[str] = ("albedo", "shading", "specular"), path: str | Path | None = None,
                  *, bank: Any = None, priors_path: str | Path | None = None,
                  check_prior: bool = True) -> dict[str, Encoder]:
    """Encoders of ``dataset`` per component (``"joint"`` for the joint prior's), from
    ``joinbench/weights/`` or the folder ``path``: float32, eval, no grad.

    Checks the sha256 recorded in each sidecar and every tensor shape, and that each was
    trained against the prior now in use: ``bank`` (a :class:`~joinbench.gan.bank.GanBank`,
    or a mapping from component to Prior or to its generator's sha256) when given, else
    the prior sidecar in ``priors_path`` (default: the shipped priors). ``check_prior=False``
    skips that check (inspection only)."""
    comps = list(components)
    if not comps:
        raise EncoderError("load_encoders needs at least one component.")
    return {c: load_encoder(dataset, c, device, path, bank=bank, priors_path=priors_path, check_prior=check_prior)
            for c in comps}


# ---------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------
@dataclass
class EncoderTrainConfig(ConfigDict):
    """Everything an encoder training run depends on (see the module docstring)."""

    ignore_unknown_keys: ClassVar[bool] = True  # saved configs carry extra keys (device_type)

    dataset: str = "materials"
    component: str = "all"  # albedo | shading | specular | all (the three) | joint
    kimg: float = 200.0
    batch: int = 16
    resolution: int | None = None  # encoder input; None: the prior's resolution
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    pixel_weight: float = 1.0  # pSp l2_lambda
    perceptual: str = "lpips-vgg"  # lpips-vgg | none (fast tests)
    perceptual_weight: float = 0.8  # pSp lpips_lambda
    seed: int = 0
    device: str = "auto"
    out: str | None = None  # None: runs/encoders/<dataset>-<component>
    priors_path: str | None = None  # folder of the priors; None: the shipped joinbench/weights
    minutes: float | None = None  # stop (checkpoint + export) after this much training in this invocation
    snapshot_kimg: float = 20.0
    log_kimg: float = 1.0
    progress: bool = True
    render_chunk: int | None = None  # images per procedural render call; None: the pool's default (4096 on CUDA)
    pool_size: int | None = None  # pooled training images on the device; None: 16,384 on CUDA, 8 batches elsewhere
    pool_refresh: float = 0.25  # fraction of the pool re-rendered at a time
    pool_reuse: float = 4.0  # times each pooled image is drawn, on average, before it is replaced
    init_from: str | None = None  # "shipped" or a folder of exported encoders to continue
    stats_samples: int = 10_000  # mapped samples for w_scale
    # network
    stem_width: int = EncoderConfig.stem_width
    widths: tuple[int, ...] = EncoderConfig.widths
    blocks: int = EncoderConfig.blocks
    # stage-1 gain, measured after training on the dataset's test split
    gain_images: int = 8
    gain_steps: int = 100  # 0: skip
    gain_stage1: dict[str, Any] = field(default_factory=dict)  # extra Stage1Config fields (e.g. regulariser)

    def resolved(self) -> "EncoderTrainConfig":
        cfg = dataclasses.replace(self, widths=tuple(int(w) for w in self.widths), gain_stage1=dict(self.gain_stage1))
        if cfg.component not in TRAIN_COMPONENTS:
            raise EncoderError(f"Unknown encoder component {cfg.component!r}; use one of {', '.join(TRAIN_COMPONENTS)}.")
        from ..training.loop import check_training_numbers

        check_training_numbers(cfg.batch, cfg.kimg, cfg.minutes, cfg.lr, EncoderError)
        if cfg.gain_images < 0 or cfg.gain_steps < 0:
            raise EncoderError(f"--gain-images and --gain-steps must be >= 0 (got {cfg.gain_images}, {cfg.gain_steps}).")
        if cfg.pixel_weight < 0 or cfg.perceptual_weight < 0:
            raise EncoderError("The pixel and perceptual weights must be >= 0.")
        from .losses import PERCEPTUAL_LOSSES
        from .stage1 import Stage1Config

        if cfg.perceptual not in PERCEPTUAL_LOSSES:
            raise EncoderError(f"Unknown perceptual loss {cfg.perceptual!r}; use one of {', '.join(PERCEPTUAL_LOSSES)}.")
        known = {f.name for f in dataclasses.fields(Stage1Config)}
        bad = sorted(set(cfg.gain_stage1) - known)
        if bad:
            raise EncoderError(f"gain_stage1 has unknown Stage1Config fields {bad}.")
        if cfg.out is None:
            cfg.out = str(Path("runs") / "encoders" / f"{cfg.dataset}-{cfg.component}")
        return cfg

    def names(self) -> tuple[str, ...]:
        return COMPONENTS if self.component == "all" else (self.component,)

    def net_config(self, resolution: int, w_dim: int) -> EncoderConfig:
        return EncoderConfig(resolution=resolution, w_dim=w_dim, stem_width=self.stem_width, widths=tuple(self.widths),
                             blocks=self.blocks)


def _encoder_loss(pred: Tensor, target: Tensor, cfg: EncoderTrainConfig, perceptual) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean over 3-channel groups (one for a component, three for joint) of pixel MSE +
    LPIPS-VGG between the generator output ``pred`` and ``target``, both encoded in [0, 1]."""
    p = torch.cat(pred.split(3, dim=1))  # (groups * B, 3, H, W): one LPIPS call
    t = torch.cat(target.split(3, dim=1))
    pixel = (p - t).square().mean()
    terms = {"pixel": pixel}
    loss = cfg.pixel_weight * pixel
    if perceptual is not None and perceptual.enabled and cfg.perceptual_weight > 0:
        lp = perceptual(p, t).mean()
        terms["perceptual"] = lp
        loss = loss + cfg.perceptual_weight * lp
    return loss, terms


class EncoderTrainer:
    """One encoder, its frozen prior and optimiser; the training wing's checkpoint unit
    (``name``, ``tensors``, ``load_tensors``, ``state``, ``load_state``)."""

    def __init__(self, name: str, cfg: EncoderTrainConfig, prior, forward_model, device: torch.device,
                 resolution: int, perceptual):
        from ..training.loop import model_seed

        self.name, self.cfg, self.prior, self.fm, self.device = name, cfg, prior, forward_model, device
        self.perceptual = perceptual
        with torch.random.fork_rng(devices=[]):  # the same initial weights on every device
            torch.manual_seed(model_seed(cfg.seed, name))
            self.encoder = Encoder(cfg.net_config(resolution, prior.w_dim))
        self.encoder.set_latent_stats(*latent_stats(prior.G, cfg.stats_samples, seed=cfg.seed))
        self.encoder.to(device).train()
        self.opt = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.channels = slice(None) if name == "joint" else slice(3 * COMPONENTS.index(name), 3 * COMPONENTS.index(name) + 3)
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def losses(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``batch``: the pool's ``image`` and ``x`` (the three components, encoded, in [-1, 1])."""
        image = batch["image"].to(self.device, torch.float32)
        target = batch["x"][:, self.channels].add(1.0).mul(0.5)  # encoded component(s), [0, 1]
        pred = self.prior.G.synthesis(self.encoder(image), noise_mode="const").add(1.0).mul(0.5)
        loss, terms = _encoder_loss(pred, target, self.cfg, self.perceptual)
        return loss, {"loss": loss, **terms}

    def step(self, batch: dict[str, Tensor]) -> None:
        self.encoder.train()
        loss, terms = self.losses(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float()
        self.count += 1

    def pop_losses(self) -> dict[str, float]:
        out = {k: float(v) / max(self.count, 1) for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out

    def init_from(self, folder: Path, dataset: str, label: str | None = None) -> dict[str, Any]:
        """Continue the exported encoder in ``folder``: its weights, re-anchored on this prior's
        latent statistics (equal to its own when the prior did not change)."""
        from ..training.sidecar import init_record

        stats = (self.encoder.w_avg.clone(), self.encoder.w_scale.clone())
        old = load_encoder(dataset, self.name, self.device, folder, check_prior=False)
        if old.config != self.encoder.config:
            diff = [f"{k}: {v!r} there, {self.encoder.config.to_dict()[k]!r} here" for k, v in old.config.to_dict().items()
                    if self.encoder.config.to_dict()[k] != v]
            raise EncoderError(f"--init-from {folder}: the {dataset} {self.name} encoder has another network "
                               f"({'; '.join(diff)}); train with its settings or drop --init-from.")
        with torch.no_grad():
            self.encoder.load_state_dict(old.state_dict())
            self.encoder.set_latent_stats(*stats)
        return init_record(old.sidecar, label or folder, sha256=old.sidecar.get("sha256"), prior_sha256=old.prior_sha256)

    # -- checkpoint interface ------------------------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        return {f"{self.name}.encoder.{k}": v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        prefix = f"{self.name}.encoder."
        self.encoder.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)

    def state(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])


class EncoderTraining:
    """One ``train encoder`` run's engine (a :class:`~joinbench.training.loop.Trainer`): the
    data pool (display image and the three encoded components per image) and the encoders."""

    def __init__(self, cfg: EncoderTrainConfig, priors: Mapping[str, Any], dataset, device: torch.device,
                 resolution: int, perceptual):
        from ..training.data import DataPool, encode_batch

        fm = dataset.forward_model
        self.data = DataPool(dataset, lambda b: {"image": b["image"], "x": encode_batch(b, fm, "joint")}, device,
                             cfg.seed, dataset.resolution, cfg.batch, cfg.pool_size, cfg.pool_refresh, cfg.pool_reuse,
                             cfg.render_chunk)
        self.units = [EncoderTrainer(n, cfg, priors[n], fm, device, resolution, perceptual) for n in cfg.names()]

    def iteration(self, step: int = 0, progress: float = 0.0) -> None:
        batch = self.data.draw()
        for t in self.units:
            t.step(batch)

    def pop_losses(self) -> dict[str, dict[str, float]]:
        return {t.name: t.pop_losses() for t in self.units}

    def snapshot(self, out: Path, clock) -> None:
        """Nothing besides the checkpoint."""


def _load_priors(cfg: EncoderTrainConfig, device: torch.device) -> dict[str, Any]:
    """The frozen prior of each encoder, plus (for the stage-1 gain) the rest of its bank."""
    from ..gan.bank import load_prior

    names = ["joint"] if cfg.component == "joint" else list(COMPONENTS)
    need_all = cfg.gain_steps > 0 and cfg.gain_images > 0
    wanted = names if need_all else list(cfg.names())
    return {n: load_prior(cfg.dataset, n, device, cfg.priors_path) for n in wanted}


@torch.no_grad()
def _component_mse(enc: dict[str, Tensor], batch: dict[str, Tensor], fm) -> dict[str, float]:
    return {c: round(float((enc[c].float() - fm.encode(c, batch[c].float())).square().mean()), 6) for c in enc}


def _mean_terms(res) -> dict[str, float]:
    return {k: round(sum(v) / max(len(v), 1), 6) for k, v in res.final_terms.items()}


def steps_to_stay_below(curve: Sequence[float], level: float) -> int | None:
    """The first step from which ``curve`` stays at or below ``level`` (None: it ends above).

    "Stays", not "first touches": stage-1 curves can dip and rise again early (step 0 has lr
    0, and the noise maps move first), and a touch would overstate the steps saved."""
    above = [i for i, v in enumerate(curve) if v > level]
    if not above:
        return 0
    return above[-1] + 1 if above[-1] + 1 < len(curve) else None


def measure_stage1_gain(encoders: Mapping[str, Encoder], priors: Mapping[str, Any], dataset, n_images: int,
                        steps: int, device: torch.device, perceptual: str = "lpips-vgg",
                        overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Stage 1 on ``n_images`` test images of ``dataset`` (a ProceduralDataset at the priors'
    resolution), from the mean latent and from ``encoders``; mean loss curves and what they say.

    ``priors`` is the bank stage 1 inverts (the three components, or ``{"joint": ...}``);
    components without an encoder start from the mean latent in both runs. Recorded: the mean
    total loss at a few steps for both, the mean final loss terms,
    ``encoder_steps_to_mean_final`` (the first step from which the encoder-initialised run
    stays at or below the loss the mean-initialised one ends with), ``steps_saved``
    (``steps`` minus that; null if never reached), and the encoded component MSE against
    ground truth at initialisation and at the end of both runs. Both runs use
    the same schedule, so the loss at step k is comparable between them (not with a run of
    k steps, whose schedule differs)."""
    from ..gan.bank import GanBank
    from .stage1 import JointInverter, Stage1Config

    joint = "joint" in priors
    cfg = Stage1Config(**{"steps": steps, "perceptual": perceptual, "log_every": 1, "joint_prior": joint,
                          **dict(overrides or {})})
    batch = dataset.render_batch_at(dataset.test_seeds(list(range(n_images))), device)
    target = batch["image"].float()
    inv = JointInverter(GanBank(dataset.name, dict(priors)), dataset.forward_model, cfg, device)
    with torch.no_grad():
        init = {c: e(target) for c, e in encoders.items()}
    t0 = time.perf_counter()
    base = inv.invert(target)
    t1 = time.perf_counter()
    guided = inv.invert(target, init=init)
    t2 = time.perf_counter()
    with torch.no_grad():
        zero = inv._initial_noise(n_images)  # the noise both runs start from: the encoded images at step 0
        enc0_mean, _ = inv.render({c: inv._initial_latent(c, n_images, None) for c in inv.priors}, zero)
        enc0_guided, _ = inv.render({c: inv._initial_latent(c, n_images, init) for c in inv.priors}, zero)

    def mean_curve(res) -> list[float]:
        return torch.tensor(res.loss_curve, dtype=torch.float64).mean(0).tolist()

    m, g = mean_curve(base), mean_curve(guided)
    at = sorted({0, steps // 10, steps // 4, steps // 2, steps - 1})
    reach = steps_to_stay_below(g, m[-1])
    stride = max(1, len(m) // 100)
    return {
        "images": n_images, "split": f"{dataset.name} test (indices 0..{n_images - 1})", "steps": steps,
        "encoders": sorted(encoders), "stage1": {k: v for k, v in dataclasses.asdict(cfg).items()
                                                 if k in ("perceptual", "regulariser", "w_plus", "noise_weight",
                                                          "pixel_weight", "lr", "joint_prior", "bank_size")},
        "loss_at_steps": {str(s): {"mean_init": round(m[s], 6), "encoder_init": round(g[s], 6)} for s in at},
        "encoder_steps_to_mean_final": reach,
        "steps_saved": None if reach is None else steps - reach,
        "final_loss_ratio": round(g[-1] / m[-1], 4) if m[-1] > 0 else None,
        # the total is dominated early by the noise term, which no latent changes: the
        # reconstruction terms at the end show what the initialisation bought
        "final_terms": {"mean_init": _mean_terms(base), "encoder_init": _mean_terms(guided)},
        "component_mse": {
            "init": {"mean_init": _component_mse(enc0_mean, batch, dataset.forward_model),
                     "encoder_init": _component_mse(enc0_guided, batch, dataset.forward_model)},
            "final": {"mean_init": _component_mse(base.encoded, batch, dataset.forward_model),
                      "encoder_init": _component_mse(guided.encoded, batch, dataset.forward_model)},
        },
        "curve_steps": list(range(0, len(m), stride)),
        "mean_curve": {"mean_init": [round(v, 6) for v in m[::stride]], "encoder_init": [round(v, 6) for v in g[::stride]]},
        "seconds": {"mean_init": round(t1 - t0, 2), "encoder_init": round(t2 - t1, 2)},
    }


def train_encoders(cfg: EncoderTrainConfig, resume: bool = False) -> Path:
    """Train (or resume) the encoder(s) of ``cfg`` and export them; returns the output folder
    holding ``<dataset>-<component>-encoder.safetensors`` + ``.json`` per encoder."""
    from ..env import resolve_device
    from ..training.data import create_training_dataset, pool_defaults
    from ..training.loop import RunSpec, TrainingRun
    from ..training.sidecar import resolve_init_from, run_record
    from .losses import PerceptualLoss

    cfg = cfg.resolved()
    device = resolve_device(cfg.device)
    defaults = pool_defaults(device, cfg.batch)
    cfg.pool_size = cfg.pool_size or defaults["size"]
    cfg.render_chunk = cfg.render_chunk or defaults["render_chunk"]
    init_folder = resolve_init_from(cfg.init_from, EncoderError) if cfg.init_from is not None else None
    run = TrainingRun(cfg.out, resume, EncoderError)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    priors = _load_priors(cfg, device)
    prior_res = {p.resolution for p in priors.values()}
    if len(prior_res) != 1:
        raise EncoderError(f"The {cfg.dataset} priors have different resolutions {sorted(prior_res)}; retrain them alike.")
    g_res = prior_res.pop()
    resolution = cfg.resolution or g_res
    cfg.resolution = resolution
    prior_shas = {n: priors[n].sha256 for n in cfg.names()}
    run.check_settings(cfg, _RESUME_KEYS, device)
    if run.resuming and run.saved.get("prior_sha256") != prior_shas:
        raise EncoderError(f"Cannot resume {run.checkpoint}: it was trained against other priors "
                           f"({run.saved.get('prior_sha256')}, now {prior_shas}); use the original --priors-path or another --out.")

    ds = create_training_dataset(cfg.dataset, g_res)
    fm = ds.forward_model
    perceptual = PerceptualLoss(cfg.perceptual, device) if cfg.perceptual != "none" else None
    training = EncoderTraining(cfg, priors, ds, device, resolution, perceptual)
    init = run.saved_init
    if not run.resuming and init_folder is not None:
        init = {t.name: t.init_from(init_folder, cfg.dataset, cfg.init_from) for t in training.units}
    spec = RunSpec(kimg=cfg.kimg, batch=cfg.batch, desc=f"{cfg.dataset}/{cfg.component} encoder", device=device,
                   minutes=cfg.minutes, log_kimg=cfg.log_kimg, snapshot_kimg=cfg.snapshot_kimg, progress=cfg.progress,
                   log_first_step=True, scalars={"prior_sha256": prior_shas, "init": init,
                                                 "config": {**cfg.to_dict(), "device_type": device.type}},
                   postfix=lambda last: "loss " + " ".join(f"{k[:2]} {v.get('loss', float('nan')):.4f}" for k, v in last.items()))
    done = run.train(training, spec)

    # export: weights first, then the gain with the exported (fp16-rounded) weights, then sidecars
    from safetensors.torch import load_file

    written, shipped = {}, {}
    for t in training.units:
        weights, sha = _write_weights(run.out, cfg.dataset, t.name, t.encoder.eval())
        written[t.name] = (weights, sha)
        with torch.random.fork_rng(devices=[]):
            e = Encoder(t.encoder.config)
        e.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
        shipped[t.name] = e.to(device).eval().requires_grad_(False)
    gain = None
    if cfg.gain_steps > 0 and cfg.gain_images > 0:
        gain = measure_stage1_gain(shipped, priors, ds, cfg.gain_images, cfg.gain_steps, device, cfg.perceptual,
                                   cfg.gain_stage1)
    train = {k: v for k, v in cfg.to_dict().items() if k not in ("out", "progress")}
    for t in training.units:
        weights, sha = written[t.name]
        p = priors[t.name]
        prior_info = {"component": t.name, "sha256": p.sha256, "sidecar": p.sidecar_path.name,
                      "resolution": p.resolution, "w_dim": p.w_dim}
        info = run_record(done.cur_nimg, done.steps, done.wall_s, device, done.log_path, train, (init or {}).get(t.name))
        _write_sidecar(run.out, cfg.dataset, t.name, t.encoder, weights, sha,
                       {**info, "forward_model": fm.name, "encoding": fm.describe(), "stage1_gain": gain,
                        "prior": prior_info, "final_losses": done.last_losses.get(t.name, {}),
                        "first_losses": done.first_losses.get(t.name, {})})
    return run.out


__all__ = [
    "ENCODER_COMPONENTS",
    "Encoder",
    "EncoderConfig",
    "EncoderError",
    "EncoderTrainConfig",
    "EncoderTrainer",
    "EncoderTraining",
    "count_parameters",
    "encoder_paths",
    "export_encoder",
    "latent_stats",
    "load_encoder",
    "load_encoders",
    "measure_stage1_gain",
    "steps_to_stay_below",
    "train_encoders",
]
