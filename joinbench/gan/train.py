"""Train StyleGAN2 priors on a procedural dataset's infinite training stream.

What a step does (StyleGAN2-ADA's ``StyleGAN2Loss`` without path-length regularisation and
without ADA, which an infinite, never-repeating stream does not need):

1. **G**: non-saturating logistic loss ``softplus(-D(G(z)))`` (style mixing with
   probability ``style_mixing_prob``, per-layer noise), Adam step on G.
2. **D**: ``softplus(D(G(z))) + softplus(-D(x))``, Adam step on D.
3. **R1** every ``r1_interval`` D steps (lazy regularisation): ``gamma / 2 * |grad_x D(x)|^2``
   times the interval, in float32; D's Adam uses ``lr * c`` and ``beta ** c`` with
   ``c = interval / (interval + 1)`` to compensate.
4. **EMA** of G: ``beta = 0.5 ** (batch / ema_nimg)`` with ``ema_nimg = min(ema_kimg * 1000,
   images_seen * ema_rampup)``.

Data: one batch per step from the dataset's procedural stream (the seeds
``ProceduralDataset.train_stream`` draws, with its torch.Generator checkpointed, so a run
resumes exactly; rendered ``render_chunk`` images at a time, which does not change them), each component encoded with the forward model and mapped to [-1, 1]. With
``component='all'`` the three component GANs train interleaved on the same rendered scenes
(each sees only its own component); ``'joint'`` is one 9-channel GAN on the concatenation
albedo | shading | specular. All randomness comes from seeded ``torch.Generator``s whose
states are checkpointed. On CUDA: TF32 and bf16 autocast for the forward passes, R1 in
float32. On CPU: float32.

Outputs in ``out``: ``checkpoint/`` (safetensors weights, ``torch.save``d optimiser and RNG
tensors loaded with ``weights_only=True``, JSON scalars), ``log.jsonl``, sample grids
``samples-<component>-<kimg>.png`` (fixed z, EMA generator, constant noise), and the export
``<dataset>-<component>-{G,D}.safetensors`` (EMA generator, discriminator; float16) with
``<dataset>-<component>.json``.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..env import sha256_file
from ..errors import JoinbenchError, did_you_mean
from ..forward import COMPONENTS
from .model import ConfigDict, Discriminator, DiscriminatorConfig, Generator, GeneratorConfig, count_parameters

TRAIN_TARGETS = (*COMPONENTS, "all", "joint")
MODEL_NAMES = (*COMPONENTS, "joint")
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_VERSION = 1
FORMAT = "joinbench-gan-prior"
FD_METHOD = ("FD-VGG16: Frechet distance of VGG16 conv5_3 (after ReLU) features, global-average-pooled "
             "(512-d), images at native resolution in [0, 1] display encoding, ImageNet-normalised")
# Settings that change the optimisation: a resumed run must keep them.
_RESUME_KEYS = ("dataset", "component", "batch", "resolution", "r1_gamma", "r1_interval", "lr", "beta1", "beta2",
                "ema_kimg", "ema_rampup", "style_mixing_prob", "seed", "z_dim", "w_dim", "mapping_layers",
                "channel_base", "channel_max", "mbstd_group_size", "forward_model")


@dataclass
class TrainConfig(ConfigDict):
    """Everything a training run depends on. ``None`` fields are resolved by :meth:`resolved`."""

    # saved configs carry extra keys (e.g. the checkpoint's device_type): from_dict drops them
    ignore_unknown_keys: ClassVar[bool] = True

    dataset: str = "materials"
    component: str = "albedo"  # albedo | shading | specular | all | joint
    kimg: float = 5000.0
    batch: int = 32
    resolution: int = 64
    r1_gamma: float | None = None  # None: StyleGAN2-ADA 'auto', 0.0002 * res^2 / batch
    r1_interval: int = 16
    lr: float = 0.0025
    beta1: float = 0.0
    beta2: float = 0.99
    ema_kimg: float | None = None  # None: StyleGAN2-ADA 'auto', batch * 10 / 32
    ema_rampup: float | None = 0.05
    style_mixing_prob: float = 0.9
    seed: int = 0
    device: str = "auto"
    snapshot_kimg: float = 100.0
    log_kimg: float = 4.0
    out: str | None = None  # None: runs/priors/<dataset>-<component>-<resolution>
    # network defaults come from the model configs, so the two cannot drift apart
    z_dim: int = GeneratorConfig.z_dim
    w_dim: int = GeneratorConfig.w_dim
    mapping_layers: int = GeneratorConfig.mapping_layers
    channel_base: int = GeneratorConfig.channel_base
    channel_max: int = GeneratorConfig.channel_max
    mbstd_group_size: int = DiscriminatorConfig.mbstd_group_size
    forward_model: str | None = None  # None: the dataset's own
    grid_size: int = 32
    progress: bool = True
    minutes: float | None = None  # stop (checkpoint + export) after this much training time in this invocation
    # images rendered per call of the procedural generator (a multiple of batch); None: one batch.
    # The data are the same for any value (see TrainStream). Larger chunks amortise the
    # generator's per-call kernel launches on a GPU; not yet validated there (see scripts/).
    render_chunk: int | None = None

    def resolved(self) -> "TrainConfig":
        cfg = copy.copy(self)
        if cfg.component not in TRAIN_TARGETS:
            raise JoinbenchError(f"Unknown component {cfg.component!r}.{did_you_mean(cfg.component, TRAIN_TARGETS)} Use one of {', '.join(TRAIN_TARGETS)}.")
        check_training_numbers(cfg.batch, cfg.kimg, cfg.minutes, cfg.lr)
        if cfg.r1_gamma is not None and not (math.isfinite(cfg.r1_gamma) and cfg.r1_gamma >= 0):
            raise JoinbenchError(f"--r1-gamma must be 0 or more, got {cfg.r1_gamma}.")
        from joinbench.datasets.base import check_resolution

        check_resolution(cfg.resolution)  # the datasets' own bounds: the stream renders at this size
        if cfg.r1_gamma is None:
            cfg.r1_gamma = 0.0002 * cfg.resolution ** 2 / cfg.batch
        if cfg.ema_kimg is None:
            cfg.ema_kimg = cfg.batch * 10 / 32
        if cfg.out is None:
            cfg.out = str(Path("runs") / "priors" / f"{cfg.dataset}-{cfg.component}-{cfg.resolution}")
        return cfg

    def model_names(self) -> tuple[str, ...]:
        return COMPONENTS if self.component == "all" else (self.component,)

    def generator_config(self, name: str) -> GeneratorConfig:
        return GeneratorConfig(resolution=self.resolution, img_channels=9 if name == "joint" else 3, z_dim=self.z_dim,
                               w_dim=self.w_dim, mapping_layers=self.mapping_layers,
                               channel_base=self.channel_base, channel_max=self.channel_max)

    def discriminator_config(self, name: str) -> DiscriminatorConfig:
        return DiscriminatorConfig(resolution=self.resolution, img_channels=9 if name == "joint" else 3,
                                   channel_base=self.channel_base, channel_max=self.channel_max,
                                   mbstd_group_size=self.mbstd_group_size)


def check_training_numbers(batch: int, kimg: float, minutes: float | None, lr: float,
                           error_cls: type[JoinbenchError] = JoinbenchError) -> None:
    """The budget and step size every training command shares, as one-line errors (nan and inf
    included, which would otherwise fail deep inside the loop or the optimiser)."""
    if batch < 1 or not (math.isfinite(kimg) and kimg > 0):
        raise error_cls(f"--batch must be >= 1 and --kimg a finite number > 0 (got batch {batch}, kimg {kimg}).")
    if minutes is not None and not (math.isfinite(minutes) and minutes > 0):
        raise error_cls(f"--minutes must be a finite number > 0, got {minutes} (leave it out for no time budget).")
    if not (math.isfinite(lr) and lr > 0):
        raise error_cls(f"--lr must be a finite number > 0, got {lr}.")


def model_seed(seed: int, name: str) -> int:
    """Per-model seed: a component trains identically alone or inside ``--component all``."""
    return int(seed) * 1_000_003 + MODEL_NAMES.index(name) * 7919 + 1


def export_stem(dataset: str, component: str) -> str:
    return f"{dataset}-{component}"


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
def create_training_dataset(name: str, resolution: int, forward_model: str | None = None):
    from ..registry import create_dataset
    from joinbench.datasets.base import ProceduralDataset

    kwargs = {"resolution": resolution}
    if forward_model:
        kwargs["forward_model"] = forward_model
    ds = create_dataset(name, **kwargs)
    if not isinstance(ds, ProceduralDataset):
        raise JoinbenchError(f"Dataset {name!r} has no procedural training stream; GAN priors train on "
                             "procedural datasets (materials, faces).")
    return ds


class TrainStream:
    """``ProceduralDataset.train_stream`` with a checkpointable position, optionally rendered in chunks.

    It draws the same seeds as ``train_stream`` (``train_seeds`` over the same seeded CPU
    generator: one draw of ``batch * chunk`` seeds equals ``chunk`` draws of ``batch``), and a
    sample renders identically whatever batch it is in, so it yields the same batches for any
    ``chunk``. Rendering ``chunk`` batches in one call is meant for GPUs: the procedural
    generator launches ~11k (faces) to ~33k (materials) small ops per call whatever its batch
    size (counted with torch.profiler on CPU), so at batch 64 it costs as much as a GAN step.
    The position (generator state at the chunk start + offset) is saved and restored.
    """

    def __init__(self, dataset, batch_size: int, device: torch.device | str, seed: int, resolution: int,
                 chunk: int = 1):
        self.dataset, self.batch_size, self.device, self.resolution = dataset, batch_size, device, resolution
        self.chunk = max(1, int(chunk))
        self.generator = torch.Generator().manual_seed(int(seed))
        self.batches = 0
        self._chunk_start: Tensor | None = None  # generator state before the pending chunk's seeds
        self._pending: dict[str, Tensor] | None = None
        self._offset = 0

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return self

    def _render_chunk(self) -> None:
        self._chunk_start = self.generator.get_state()
        seeds = self.dataset.train_seeds(self.generator, self.batch_size * self.chunk)
        self._pending = self.dataset.render_batch_at(seeds, self.device, self.resolution)

    def __next__(self) -> dict[str, Tensor]:
        if self._pending is None or self._offset >= self.batch_size * self.chunk:
            self._render_chunk()
            self._offset = 0
        o, b = self._offset, self.batch_size
        out = {k: v[o:o + b] for k, v in self._pending.items()}
        self._offset += b
        self.batches += 1
        return out

    def state(self) -> dict[str, Any]:
        if self._pending is not None and self._offset < self.batch_size * self.chunk:
            return {"generator": self._chunk_start, "batches": self.batches, "offset": self._offset}
        return {"generator": self.generator.get_state(), "batches": self.batches, "offset": 0}

    def load_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.batches = int(state["batches"])
        self._pending, self._offset = None, 0
        offset = int(state.get("offset", 0))
        if offset:  # skip the seeds already consumed: the next chunk starts at the next unseen image
            self.dataset.train_seeds(self.generator, offset)


def encode_batch(batch: dict[str, Tensor], forward_model, name: str) -> Tensor:
    """Linear components -> the training image of model ``name`` in [-1, 1] (joint: 9 channels)."""
    comps = COMPONENTS if name == "joint" else (name,)
    enc = [forward_model.encode(c, batch[c]) for c in comps]
    return torch.cat(enc, dim=1).mul(2.0).sub(1.0)


def to_display(img: Tensor) -> Tensor:
    """Generator output (about [-1, 1]) -> encoded display space [0, 1]."""
    return img.float().add(1.0).mul(0.5).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------
# pieces with their own tests
# ---------------------------------------------------------------------------------------
def ema_beta(batch: int, cur_nimg: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """StyleGAN2-ADA's EMA coefficient: half-life ``ema_kimg`` (ramped up early in training)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(g_ema: torch.nn.Module, g: torch.nn.Module, beta: float) -> None:
    """``p_ema <- beta * p_ema + (1 - beta) * p`` for parameters; buffers are copied."""
    torch._foreach_lerp_(list(g_ema.parameters()), [p.detach() for p in g.parameters()], 1.0 - beta)
    for b_ema, b in zip(g_ema.buffers(), g.buffers()):
        b_ema.copy_(b)


def d_loss(D: torch.nn.Module, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Non-saturating logistic D loss; also returns the mean real and fake logits."""
    real_logits, fake_logits = D(real).float(), D(fake).float()
    loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
    return loss, real_logits.mean().detach(), fake_logits.mean().detach()


def r1_penalty(D: torch.nn.Module, real: Tensor) -> Tensor:
    """Per-sample ``|grad_x D(x)|^2`` in float32."""
    real = real.detach().float().requires_grad_(True)
    logits = D(real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.square().sum(dim=[1, 2, 3])


# ---------------------------------------------------------------------------------------
# one model (G, D, G_ema, optimisers, RNG)
# ---------------------------------------------------------------------------------------
class PriorTrainer:
    """One GAN and everything needed to step it and checkpoint it exactly."""

    def __init__(self, name: str, cfg: TrainConfig, device: torch.device):
        self.name, self.cfg, self.device = name, cfg, device
        seed = model_seed(cfg.seed, name)
        with torch.random.fork_rng(devices=[]):  # the same initial weights on every device
            torch.manual_seed(seed)
            self.G = Generator(cfg.generator_config(name))
            self.D = Discriminator(cfg.discriminator_config(name))
        self.G.to(device).train()
        self.D.to(device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        c = cfg.r1_interval / (cfg.r1_interval + 1)
        fused = device.type == "cuda"  # one kernel per step instead of several per parameter
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=fused)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr * c, betas=(cfg.beta1 ** c, cfg.beta2 ** c), eps=1e-8,
                                      fused=fused)
        self.gen = torch.Generator(device=device).manual_seed(seed)  # z and noise, on the device
        self.gen_cpu = torch.Generator().manual_seed(seed + 1)  # scalar draws (mixing), no device sync
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                         else contextlib.nullcontext())

    # -- sampling ----------------------------------------------------------------------
    def _ws(self, batch: int) -> Tensor:
        G = self.G
        z = torch.randn(batch, G.z_dim, device=self.device, generator=self.gen)
        ws = G.mapping(z)[:, None, :].repeat(1, G.num_ws, 1)
        if self.cfg.style_mixing_prob > 0:
            cutoff = int(torch.randint(1, G.num_ws, (), generator=self.gen_cpu))
            mix = float(torch.rand((), generator=self.gen_cpu)) < self.cfg.style_mixing_prob
            z2 = torch.randn(batch, G.z_dim, device=self.device, generator=self.gen)
            if mix:
                ws = torch.cat([ws[:, :cutoff], G.mapping(z2)[:, None, :].expand(-1, G.num_ws - cutoff, -1)], dim=1)
        return ws

    def _fake(self, batch: int) -> tuple[Tensor, Tensor]:
        ws = self._ws(batch)
        noise = self.G.make_noise(batch, generator=self.gen, device=self.device)
        return self.G.synthesis(ws, noise=noise), ws

    def _acc(self, key: str, value: Tensor) -> None:
        self.sums[key] = self.sums.get(key, 0) + value.detach().float()
        self.counts[key] = self.counts.get(key, 0) + 1

    # -- one training iteration ---------------------------------------------------------
    def step(self, real: Tensor, d_step: int) -> None:
        cfg, b = self.cfg, real.shape[0]
        # G: non-saturating loss
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        with self.autocast:
            fake, _ = self._fake(b)
            loss_g = F.softplus(-self.D(fake).float()).mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_G.step()
        self._acc("loss_G", loss_g)
        # D: logistic loss on fresh fakes and the real batch
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        with torch.no_grad(), self.autocast:
            fake, ws = self._fake(b)
            self.G.mapping.w_avg.lerp_(ws[:, 0].float().mean(0), 1.0 - self.G.config.w_avg_beta)
        with self.autocast:
            loss_d, real_logit, fake_logit = d_loss(self.D, real, fake)
        self.opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_D.step()
        self._acc("loss_D", loss_d)
        self._acc("D_real", real_logit)
        self._acc("D_fake", fake_logit)
        # lazy R1 in float32
        if cfg.r1_gamma > 0 and d_step % cfg.r1_interval == 0:
            penalty = r1_penalty(self.D, real)
            loss_r1 = (penalty * (cfg.r1_gamma / 2)).mean() * cfg.r1_interval
            self.opt_D.zero_grad(set_to_none=True)
            loss_r1.backward()
            self.opt_D.step()
            self._acc("r1_penalty", penalty.mean())
        self.D.requires_grad_(False)

    def end_step(self, cur_nimg: int, batch: int) -> None:
        update_ema(self.G_ema, self.G, ema_beta(batch, cur_nimg, self.cfg.ema_kimg, self.cfg.ema_rampup))

    def pop_losses(self) -> dict[str, float]:
        out = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        self.sums, self.counts = {}, {}
        self.last.update(out)
        return out

    # -- state -------------------------------------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        out = {}
        for part in ("G", "D", "G_ema"):
            for k, v in getattr(self, part).state_dict().items():
                out[f"{self.name}.{part}.{k}"] = v.detach().cpu().contiguous()
        return out

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        for part in ("G", "D", "G_ema"):
            prefix = f"{self.name}.{part}."
            sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            getattr(self, part).load_state_dict(sd, strict=True)

    def state(self) -> dict[str, Any]:
        return {"opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "gen": self.gen.get_state(), "gen_cpu": self.gen_cpu.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.gen.set_state(state["gen"])
        self.gen_cpu.set_state(state["gen_cpu"])


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(out: Path, trainers: list[PriorTrainer], stream: TrainStream, scalars: dict[str, Any]) -> Path:
    """Write ``out/checkpoint`` (weights, optimiser + RNG state, scalars) as one directory swap."""
    from safetensors.torch import save_file

    final = out / CHECKPOINT_DIR
    tmp = out / f".{CHECKPOINT_DIR}.tmp"
    old = out / f"{CHECKPOINT_DIR}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors: dict[str, Tensor] = {}
    for t in trainers:
        tensors.update(t.tensors())
    save_file(tensors, str(tmp / "models.safetensors"), metadata={"format": "joinbench-gan-checkpoint"})
    state = {"trainers": {t.name: t.state() for t in trainers}, "stream": stream.state(),
             "torch_rng": torch.get_rng_state()}
    torch.save(state, tmp / "state.pt")
    sums = {f: sha256_file(tmp / f) for f in ("models.safetensors", "state.pt")}  # checked by load_checkpoint
    (tmp / "state.json").write_text(json.dumps({"version": CHECKPOINT_VERSION, **scalars, "sha256": sums}, indent=2,
                                               default=str) + "\n")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(out)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint in ``out`` (``checkpoint``, else ``checkpoint.old``)."""
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):
        d = out / name
        if all((d / f).is_file() for f in ("models.safetensors", "state.pt", "state.json")):
            return d
    return None


def open_checkpoint(out: Path, resume: bool, error_cls: type[JoinbenchError] = JoinbenchError) -> tuple[Path | None, dict[str, Any] | None]:
    """Make the ``--out`` folder and find its checkpoint for a training command: (folder, its
    state.json) when resuming, (None, None) for a new run. One-line errors for a checkpoint
    without --resume, --resume without a complete checkpoint (it would silently start over)
    and an unreadable state.json. Shared by the prior and the encoder trainings."""
    from ..env import make_folder

    make_folder(out)
    ckpt = find_checkpoint(out)
    if ckpt is not None and not resume:
        raise error_cls(f"{out} already holds a training checkpoint: pass --resume to continue it, or choose another --out.")
    if ckpt is None:
        if resume:
            raise error_cls(f"--resume: {out} holds no complete checkpoint ({CHECKPOINT_DIR}/ with models.safetensors, "
                            "state.pt and state.json); drop --resume to start a new training there.")
        return None, None
    try:
        saved = json.loads((ckpt / "state.json").read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise error_cls(f"Cannot resume from {ckpt}: state.json is unreadable ({type(exc).__name__}); delete that "
                        "checkpoint folder or choose another --out.") from None
    return ckpt, saved


def load_checkpoint(path: Path, trainers: list[PriorTrainer], stream: TrainStream) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        scalars = json.loads((path / "state.json").read_text())
        for name, expected in (scalars.get("sha256") or {}).items():
            found = sha256_file(path / name)
            if found != expected:
                raise ValueError(f"{name} has sha256 {found}, expected {expected}: the file is damaged")
        tensors = load_file(str(path / "models.safetensors"))
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        for t in trainers:
            t.load_tensors(tensors)
            t.load_state(state["trainers"][t.name])
        stream.load_state(state["stream"])
        torch.set_rng_state(state["torch_rng"])
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, EOFError, json.JSONDecodeError) as exc:
        raise JoinbenchError(f"Cannot resume from {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
                             "delete that checkpoint folder or choose another --out.") from None
    return scalars


# ---------------------------------------------------------------------------------------
# grids and export
# ---------------------------------------------------------------------------------------
def _grid_rows(images: Tensor, name: str, per_row: int = 8) -> list[list[Tensor]]:
    """(N, C, H, W) in [0, 1] -> rows of cells; a joint sample occupies 3 cells (al | sh | sp)."""
    cells = [s for img in images for s in (img.split(3, dim=0) if name == "joint" else (img,))]
    per_row = 9 if name == "joint" else per_row
    return [cells[i:i + per_row] for i in range(0, len(cells), per_row)]


def save_grid(images: Tensor, name: str, path: Path, per_row: int = 8) -> Path:
    from ..viz import grid_image, save_image_atomic

    rows = _grid_rows(to_display(images).cpu(), name, per_row)
    return save_image_atomic(grid_image(rows, cell=max(64, images.shape[-1])), path)


@torch.no_grad()
def sample_images(G: Generator, z: Tensor, truncation_psi: float = 1.0, noise_mode: str = "const", chunk: int = 64) -> Tensor:
    dev = next(G.parameters()).device
    return torch.cat([G(z[i:i + chunk].to(dev), truncation_psi, noise_mode=noise_mode).float()
                      for i in range(0, z.shape[0], chunk)])


def _state_fp16(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in module.state_dict().items()}


def export_prior(out: Path, dataset: str, name: str, G_ema: Generator, D: Discriminator,
                 info: dict[str, Any]) -> Path:
    """Write ``<dataset>-<name>-G/D.safetensors`` (float16) and the sidecar ``<dataset>-<name>.json``."""
    from safetensors.torch import save

    from ..env import write_atomic, write_json

    stem = export_stem(dataset, name)
    files = {"G": f"{stem}-G.safetensors", "D": f"{stem}-D.safetensors"}
    meta = {"format": FORMAT, "dataset": dataset, "component": name, "dtype": "float16"}
    hashes = {}
    for part, module in (("G", G_ema), ("D", D)):
        path = write_atomic(out / files[part], save(_state_fp16(module), metadata={**meta, "part": part}))
        hashes[part] = sha256_file(path)
    sidecar = {
        "format": FORMAT, "version": 1, "dataset": dataset, "component": name,
        "channels": list(COMPONENTS) if name == "joint" else [name],
        "resolution": G_ema.resolution, "img_channels": G_ema.img_channels, "dtype": "float16",
        "output": "G(z) is about [-1, 1]; the encoded component is (G(z) + 1) / 2 clipped to [0, 1]",
        "generator": G_ema.config.to_dict(), "discriminator": D.config.to_dict(),
        "params": {"G": count_parameters(G_ema), "D": count_parameters(D)},
        "files": files, "sha256": hashes,
        "fd": None, "fd_floor": None, "fd_ratio": None, "fd_n": None, "fd_components": None, "fd_method": FD_METHOD,
        **info,
    }
    return write_json(out / f"{stem}.json", sidecar)


# ---------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------
def _check_resume(saved: dict[str, Any], cfg: TrainConfig, device: torch.device, path: Path) -> None:
    diffs = [f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in _RESUME_KEYS if saved.get(k) != getattr(cfg, k)]
    if diffs:
        raise JoinbenchError(f"Cannot resume {path}: settings differ from the checkpoint ({'; '.join(diffs)}); "
                             "use the original settings or another --out.")
    if saved.get("device_type") not in (None, device.type):
        raise JoinbenchError(f"Cannot resume {path} on {device.type}: it was trained on {saved['device_type']} "
                             f"(RNG states are per device type); use --device {saved['device_type']}.")


def _truncate_log(path: Path, max_nimg: int) -> None:
    """Drop log lines written after the checkpoint being resumed (a crash between the two)."""
    if not path.is_file():
        return
    from ..env import write_atomic

    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("nimg", 0) <= max_nimg:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    write_atomic(path, "".join(line + "\n" for line in keep))


def last_logged_rate(log_path: Path) -> float | None:
    """images/s of the last ``log.jsonl`` line (the sidecars' throughput), None without one."""
    if not log_path.is_file():
        return None
    with contextlib.suppress(Exception):
        return json.loads(log_path.read_text().splitlines()[-1]).get("images_per_s")
    return None


def train_prior(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train (or resume) the prior(s) of ``cfg``; returns the output folder holding the export."""
    from ..env import device_name, git_commit, resolve_device, versions
    from ..training.clock import TrainClock

    cfg = cfg.resolved()
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    ckpt, saved = open_checkpoint(out, resume)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    ds = create_training_dataset(cfg.dataset, cfg.resolution, cfg.forward_model)
    fm = ds.forward_model
    trainers = [PriorTrainer(n, cfg, device) for n in cfg.model_names()]
    chunk_images = cfg.render_chunk or cfg.batch
    stream = TrainStream(ds, cfg.batch, device, cfg.seed, cfg.resolution, chunk=max(1, chunk_images // cfg.batch))
    scalars = None
    if ckpt is not None:
        _check_resume(saved.get("config", {}), cfg, device, ckpt)
        scalars = load_checkpoint(ckpt, trainers, stream)
        for t in trainers:
            t.last = dict(scalars.get("losses", {}).get(t.name, {}))
        _truncate_log(out / "log.jsonl", int(scalars["cur_nimg"]))
    log_path = out / "log.jsonl"
    total_nimg = int(round(cfg.kimg * 1000))
    grid_z = torch.randn(cfg.grid_size, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 12345))

    def snapshot(clock: TrainClock) -> None:
        kimg = clock.cur_nimg // 1000
        for t in trainers:
            save_grid(sample_images(t.G_ema, grid_z), t.name, out / f"samples-{t.name}-{kimg:06d}.png")
        save_checkpoint(out, trainers, stream, {**clock.scalars(), "config": {**cfg.to_dict(), "device_type": device.type},
                                                "losses": {t.name: t.last for t in trainers}})

    first = True
    # done: all images seen, or the --minutes budget is spent (export what we have, resumable with --resume)
    with TrainClock(total_nimg, cfg.batch, cfg.minutes, scalars, f"{cfg.dataset}/{cfg.component}", cfg.progress) as clock:
        while not clock.done:
            batch = next(stream)
            if first and clock.cur_nimg == 0:
                for t in trainers:
                    save_grid(encode_batch(batch, fm, t.name)[: cfg.grid_size], t.name, out / f"reals-{t.name}.png")
            first = False
            for t in trainers:
                t.step(encode_batch(batch, fm, t.name), clock.step)
            for t in trainers:
                t.end_step(clock.cur_nimg, cfg.batch)
            clock.advance()
            if clock.due(cfg.log_kimg):
                losses = {t.name: {k: round(v, 6) for k, v in t.pop_losses().items()} for t in trainers}
                rate = clock.log(log_path, device, losses, models=len(trainers))
                clock.bar.set_postfix_str(f"{rate:.1f} img/s" + (f" x{len(trainers)} models" if len(trainers) > 1 else ""))
            if clock.due(cfg.snapshot_kimg):
                clock.fold_wall()
                snapshot(clock)
    cur_nimg, wall_s = clock.cur_nimg, clock.wall_s

    last_rate = last_logged_rate(log_path)
    info = {
        "images_seen": cur_nimg, "kimg": cur_nimg / 1000, "wall_time_s": round(wall_s, 1),
        "device": device_name(device), "commit": git_commit(), "versions": versions(),
        "forward_model": fm.name, "encoding": fm.describe(),
        "train": {k: v for k, v in cfg.to_dict().items() if k not in ("out", "progress")},
        "throughput_images_per_s": last_rate,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for t in trainers:
        export_prior(out, cfg.dataset, t.name, t.G_ema, t.D, {**info, "losses": t.last})
    return out


__all__ = [
    "TRAIN_TARGETS",
    "PriorTrainer",
    "TrainConfig",
    "TrainStream",
    "d_loss",
    "ema_beta",
    "encode_batch",
    "export_prior",
    "find_checkpoint",
    "r1_penalty",
    "sample_images",
    "save_checkpoint",
    "train_prior",
    "update_ema",
]
