"""``unet``: a compact supervised U-Net, display image -> encoded albedo | shading | specular.

The feed-forward baseline: one small U-Net (``levels`` resolutions, widths ``base_width *
2**i``, two 3x3 conv + GroupNorm + SiLU per block, max-pool down, bilinear up + 3x3 conv)
maps the display image to 9 channels, sigmoid, read as the *encoded* components (albedo
sRGB-encoded, shading and specular Reinhard-encoded, the spaces of
:class:`joinbench.forward.ForwardModel`). ``decompose`` decodes them to linear with
``forward_model.decode(c, enc, clip=True)``.

Training (``joinbench train unet --dataset materials``, or :meth:`UNetMethod.fit`) is
supervised on the same procedural training data the GAN priors see (the training wing's
device data pool; checkpoints, ``--resume``, ``--minutes``, Ctrl-C and ``--init-from`` as
for the priors). Loss per step::

    sum_c [ L1(pred_c, enc(gt_c)) + lpips_weight * LPIPS-Alex(pred_c, enc(gt_c)) ]
        + render_weight * L1(render(decode(pred)), image)

Adam (lr 2e-3) with a cosine decay to 5% over the run (the run's progress is the larger of
images seen / ``kimg`` and elapsed / ``--minutes``, so a time-boxed run still anneals).
Seeded: the weights from ``torch.manual_seed(seed)``, the stream from ``seed``.

Export: ``<dataset>-unet.safetensors`` (float16) and the sidecar ``<dataset>-unet.json``
(network config, resolution, forward model, sha256, images seen, wall time, device,
commit, versions, final losses). The method loads ``joinbench/weights/<dataset>-unet.*``
by default (``--set weights_path=FILE`` for another export), lazily on the first ``.to()``
or ``decompose``, checking the hash and every tensor shape. Inputs at another size are
resized (bilinear, antialiased) to the training resolution and the outputs resized back.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from joinbench.errors import JoinbenchError
from joinbench.forward import COMPONENTS, ForwardModel
from joinbench.method import Method, MethodConfig
from joinbench.registry import register_method
from joinbench.types import Decomposition

FORMAT = "joinbench-unet"
OUT_CHANNELS = 9  # albedo | shading | specular, encoded, in [0, 1]


class UNetWeightsError(JoinbenchError):
    """U-Net weights that are missing, corrupt or do not fit their sidecar."""


# ---------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------
@dataclass
class UNetConfig:
    base_width: int = 16
    levels: int = 4
    in_channels: int = 3
    out_channels: int = OUT_CHANNELS

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        return cls(**{f.name: int(d[f.name]) for f in dataclasses.fields(cls) if f.name in d})


def _groups(ch: int) -> int:
    for g in (8, 4, 2):
        if ch % g == 0:
            return g
    return 1


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(_groups(cout), cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(_groups(cout), cout), nn.SiLU(),
        )


class UNet(nn.Module):
    """(B, 3, H, W) display image in [0, 1] -> (B, 9, H, W) encoded components in [0, 1].

    H and W must be divisible by ``2 ** (levels - 1)``."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        cfg = config or UNetConfig()
        if cfg.levels < 1 or cfg.base_width < 1:
            raise JoinbenchError(f"U-Net needs levels >= 1 and base_width >= 1 (got {cfg.levels}, {cfg.base_width}).")
        self.config = cfg
        widths = [cfg.base_width * 2 ** i for i in range(cfg.levels)]
        self.down = nn.ModuleList()
        cin = cfg.in_channels
        for w in widths:
            self.down.append(_Block(cin, w))
            cin = w
        self.up_conv = nn.ModuleList()
        self.up_block = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up_conv.append(nn.Conv2d(cin, w, 3, padding=1))
            self.up_block.append(_Block(2 * w, w))
            cin = w
        self.head = nn.Conv2d(cin, cfg.out_channels, 1)

    @property
    def multiple(self) -> int:
        return 2 ** (self.config.levels - 1)

    def forward(self, image: Tensor) -> Tensor:
        x = image * 2.0 - 1.0
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for conv, block, skip in zip(self.up_conv, self.up_block, reversed(skips[:-1])):
            x = conv(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
            x = block(torch.cat([x, skip], dim=1))
        return torch.sigmoid(self.head(x))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def split_components(out: Tensor) -> dict[str, Tensor]:
    """(B, 9, H, W) -> {albedo, shading, specular: (B, 3, H, W)}."""
    return dict(zip(COMPONENTS, out.split(3, dim=1)))


# ---------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------
@dataclass
class UNetTrainConfig:
    dataset: str = "materials"
    kimg: float = 1000.0
    batch: int = 32
    resolution: int = 64
    base_width: int = 16
    levels: int = 4
    lr: float = 2e-3
    lr_final: float = 0.05  # cosine decay to lr * lr_final at the end of the run
    lpips_weight: float = 1.0
    render_weight: float = 1.0
    seed: int = 0
    device: str = "auto"
    out: str | None = None  # None: runs/unet/<dataset>-<resolution>
    minutes: float | None = None
    progress: bool = True
    log_kimg: float = 4.0
    snapshot_kimg: float = 100.0
    pool_size: int | None = None  # pooled training images on the device; None: 16,384 on CUDA, 8 batches elsewhere
    pool_refresh: float = 0.25
    pool_reuse: float = 4.0
    render_chunk: int | None = None  # images per render call; None: the pool's default
    init_from: str | None = None  # "shipped" or a folder holding <dataset>-unet.safetensors to continue

    def net_config(self) -> UNetConfig:
        return UNetConfig(base_width=self.base_width, levels=self.levels)

    def check(self) -> None:
        from joinbench.training.loop import check_training_numbers

        check_training_numbers(self.batch, self.kimg, self.minutes, self.lr)
        if self.lpips_weight < 0 or self.render_weight < 0:
            raise JoinbenchError("--lpips-weight and the render weight must be >= 0.")
        if self.resolution % 2 ** (self.levels - 1):
            raise JoinbenchError(f"--resolution {self.resolution} is not divisible by 2^(levels-1) = "
                                 f"{2 ** (self.levels - 1)}; use fewer --levels or another resolution.")


# settings that change the optimisation or the data: a resumed run must keep them
_RESUME_KEYS = ("dataset", "batch", "resolution", "base_width", "levels", "lr", "lr_final", "lpips_weight",
                "render_weight", "seed", "pool_size", "pool_refresh", "pool_reuse")


class UNetTrainer:
    """The U-Net, its optimiser and the loss; ``step(batch)`` takes one batch of linear
    components and display images. The training wing's checkpoint unit (name ``unet``)."""

    name = "unet"

    def __init__(self, cfg: UNetTrainConfig, device: torch.device | str, forward_model: ForwardModel):
        self.cfg, self.device, self.fm = cfg, torch.device(device), forward_model
        with torch.random.fork_rng(devices=[]):  # the same initial weights on every device
            torch.manual_seed(int(cfg.seed))
            self.net = UNet(cfg.net_config())
        self.net.to(self.device).train()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.lpips = None
        if cfg.lpips_weight > 0:
            from joinbench.lpips_weights import lpips_model

            self.lpips = lpips_model("alex", self.device)
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def set_progress(self, progress: float) -> float:
        """Cosine decay from lr to lr * lr_final as ``progress`` goes 0 -> 1; returns the lr."""
        p = min(max(progress, 0.0), 1.0)
        f = self.cfg.lr_final + (1.0 - self.cfg.lr_final) * 0.5 * (1.0 + math.cos(math.pi * p))
        lr = self.cfg.lr * f
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def losses(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        fm, cfg = self.fm, self.cfg
        image = batch["image"].to(self.device, torch.float32)
        pred = split_components(self.net(image))
        comps = [c for c in fm.components if c in batch]
        targets = {c: fm.encode(c, batch[c].to(self.device, torch.float32)) for c in comps}
        terms: dict[str, Tensor] = {}
        for c in comps:
            terms[f"l1_{c}"] = (pred[c] - targets[c]).abs().mean()
        if self.lpips is not None:
            p = torch.cat([pred[c] for c in comps])
            t = torch.cat([targets[c] for c in comps])
            per = self.lpips(p, t, normalize=True).flatten().view(len(comps), -1).mean(dim=1)
            for c, v in zip(comps, per):
                terms[f"lpips_{c}"] = v
        if cfg.render_weight > 0:
            rerender = fm.render_encoded(pred, clip=True)
            terms["render"] = (rerender - image).abs().mean()
        total = sum(v * (cfg.lpips_weight if k.startswith("lpips_") else cfg.render_weight if k == "render" else 1.0)
                    for k, v in terms.items())
        return total, {"loss": total, **terms}

    def step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One Adam step; returns the loss terms as tensors (read them back only when needed)."""
        self.net.train()
        loss, terms = self.losses(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        terms = {k: v.detach() for k, v in terms.items()}
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0) + v.float()
        self.count += 1
        return terms

    @torch.no_grad()
    def evaluate(self, batch: dict[str, Tensor]) -> dict[str, float]:
        self.net.eval()
        return {k: float(v) for k, v in self.losses(batch)[1].items()}

    def pop_losses(self) -> dict[str, float]:
        out = {k: float(v) / max(self.count, 1) for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out

    def init_from(self, folder: Path, dataset: str, label: str | None = None) -> dict[str, Any]:
        """Continue the exported U-Net of ``dataset`` in ``folder`` (its network must match)."""
        from joinbench.training.sidecar import init_record

        net, sc = load_unet(weights_file(dataset, folder), dataset, self.device)
        if net.config != self.net.config or int(sc["resolution"]) != self.cfg.resolution:
            raise UNetWeightsError(f"--init-from {folder}: the {dataset} U-Net has width {net.config.base_width}, "
                                   f"{net.config.levels} levels at {sc['resolution']} px, not {self.cfg.base_width}, "
                                   f"{self.cfg.levels} at {self.cfg.resolution} px; train with its settings or drop --init-from.")
        with torch.no_grad():
            self.net.load_state_dict(net.state_dict())
        return init_record(sc, label or folder, sha256=sc.get("sha256"))

    # -- checkpoint interface ------------------------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        return {f"unet.{k}": v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.net.load_state_dict({k[len("unet."):]: v for k, v in tensors.items() if k.startswith("unet.")}, strict=True)

    def state(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])


class UNetTraining:
    """One ``train unet`` run's engine (a :class:`~joinbench.training.loop.Trainer`): the data
    pool (display image and linear components per image) and the U-Net; the learning rate
    follows the run's progress (images or ``--minutes``, whichever is further)."""

    def __init__(self, cfg: UNetTrainConfig, dataset, device: torch.device):
        from joinbench.training.data import DataPool

        keep = ("image", *COMPONENTS)
        self.data = DataPool(dataset, lambda b: {k: b[k] for k in keep if k in b}, device, cfg.seed, cfg.resolution,
                             cfg.batch, cfg.pool_size, cfg.pool_refresh, cfg.pool_reuse, cfg.render_chunk)
        self.trainer = UNetTrainer(cfg, device, dataset.forward_model)
        self.units = [self.trainer]

    def iteration(self, step: int = 0, progress: float = 0.0) -> None:
        self.trainer.set_progress(progress)
        self.trainer.step(self.data.draw())

    def pop_losses(self) -> dict[str, dict[str, float]]:
        return {"unet": self.trainer.pop_losses()}

    def snapshot(self, out: Path, clock) -> None:
        """Nothing besides the checkpoint."""


def export_unet(out: Path, dataset: str, net: UNet, resolution: int, forward_model: str,
                info: dict[str, Any]) -> Path:
    """Write ``<dataset>-unet.safetensors`` (float16) and the sidecar; returns the weights path."""
    from safetensors.torch import save

    from joinbench.env import sha256_file, write_atomic, write_json

    stem = f"{dataset}-unet"
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in net.state_dict().items()}
    meta = {"format": FORMAT, "dataset": dataset, "dtype": "float16"}
    path = write_atomic(Path(out) / f"{stem}.safetensors", save(tensors, metadata=meta))
    sidecar = {
        "format": FORMAT, "version": 1, "dataset": dataset, "dtype": "float16",
        "network": net.config.to_dict(), "resolution": int(resolution), "forward_model": forward_model,
        "channels": list(COMPONENTS),
        "output": "sigmoid outputs in [0, 1]: encoded albedo | shading | specular (forward model encodings)",
        "params": count_parameters(net), "size_bytes": path.stat().st_size,
        "file": path.name, "sha256": sha256_file(path), **info,
    }
    write_json(Path(out) / f"{stem}.json", sidecar)
    return path


def train_unet(cfg: UNetTrainConfig, resume: bool = False) -> Path:
    """Train (or resume) the U-Net of ``cfg.dataset`` on its procedural data in the training wing
    and export it; returns the exported ``.safetensors`` path (the sidecar is beside it)."""
    from joinbench.env import resolve_device
    from joinbench.training.data import create_training_dataset, pool_defaults
    from joinbench.training.loop import RunSpec, TrainingRun
    from joinbench.training.sidecar import resolve_init_from, run_record

    cfg.check()
    device = resolve_device(cfg.device)
    defaults = pool_defaults(device, cfg.batch)
    cfg.pool_size = cfg.pool_size or defaults["size"]
    cfg.render_chunk = cfg.render_chunk or defaults["render_chunk"]
    cfg.out = cfg.out or str(Path("runs") / "unet" / f"{cfg.dataset}-{cfg.resolution}")
    init_folder = resolve_init_from(cfg.init_from) if cfg.init_from is not None else None
    run = TrainingRun(cfg.out, resume)
    run.check_settings(cfg, _RESUME_KEYS, device)
    ds = create_training_dataset(cfg.dataset, cfg.resolution)
    fm = ds.forward_model
    training = UNetTraining(cfg, ds, device)
    init = run.saved_init
    if not run.resuming and init_folder is not None:
        init = training.trainer.init_from(init_folder, cfg.dataset, cfg.init_from)
    config = dataclasses.asdict(cfg)
    spec = RunSpec(kimg=cfg.kimg, batch=cfg.batch, desc=f"{cfg.dataset}/unet", device=device, minutes=cfg.minutes,
                   log_kimg=cfg.log_kimg, snapshot_kimg=cfg.snapshot_kimg, progress=cfg.progress, log_first_step=True,
                   scalars={"config": {**config, "device_type": device.type}, "init": init},
                   postfix=lambda last: f"loss {last.get('unet', {}).get('loss', float('nan')):.4f}")
    done = run.train(training, spec)
    train = {k: v for k, v in config.items() if k not in ("out", "progress")}
    info = run_record(done.cur_nimg, done.steps, done.wall_s, device, done.log_path, train, init)
    info.update({"encoding": fm.describe(), "final_losses": done.last_losses.get("unet", {}),
                 "first_losses": done.first_losses.get("unet", {})})
    return export_unet(run.out, cfg.dataset, training.trainer.net.eval(), cfg.resolution, fm.name, info)


# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------
def shipped_weights_dir() -> Path:
    import joinbench

    return Path(joinbench.__file__).resolve().parent / "weights"


def weights_file(dataset: str, path: str | Path | None = None) -> Path:
    """The ``.safetensors`` of ``dataset``'s U-Net: ``path`` (file, sidecar or folder) or the shipped one."""
    if path in (None, "", "none", "None"):
        return shipped_weights_dir() / f"{dataset}-unet.safetensors"
    p = Path(path).expanduser()
    if p.suffix == ".json":
        return p.with_suffix(".safetensors")
    if p.is_dir():
        return p / f"{dataset}-unet.safetensors"
    return p


def load_unet(file: Path, dataset: str, device: torch.device | str = "cpu") -> tuple[UNet, dict[str, Any]]:
    """Load and verify an exported U-Net (sha256, keys, shapes); float32, eval, no grad."""
    from joinbench.weights_io import load_checked

    how = f"train it with `joinbench train unet --dataset {dataset}` and pass --set weights_path=FILE"
    sidecar = file.with_suffix(".json")
    if not file.is_file():
        raise UNetWeightsError(f"No {dataset} U-Net weights: {file} does not exist; {how}.")
    if not sidecar.is_file():
        raise UNetWeightsError(f"{file}: its sidecar {sidecar.name} is missing; re-export with `joinbench train unet --dataset {dataset}`.")
    try:
        sc = json.loads(sidecar.read_text())
        if not isinstance(sc, dict) or sc.get("format") != FORMAT:
            raise ValueError(f"format {FORMAT!r} expected")
        net_cfg = UNetConfig.from_dict(sc["network"])
        expected_sha = sc["sha256"]
        resolution = int(sc["resolution"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise UNetWeightsError(f"{sidecar}: not a usable joinbench U-Net sidecar ({type(exc).__name__}: {exc}); "
                               f"re-export with `joinbench train unet --dataset {dataset}`.") from None
    with torch.random.fork_rng(devices=[]):
        net = UNet(net_cfg)
    load_checked(net, file, expected_sha, sidecar, UNetWeightsError, how)
    sc["resolution"] = resolution
    return net.to(device).eval().requires_grad_(False), sc


# ---------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------
@dataclass
class UNetMethodConfig(MethodConfig):
    weights_path: str | None = None  # None: the shipped joinbench/weights/<dataset>-unet.safetensors
    dataset: str = "materials"  # whose weights (and, for fit, whose training stream)
    # used by fit() (defaults: UNetTrainConfig's); a loaded export's network comes from its sidecar
    base_width: int = UNetTrainConfig.base_width
    levels: int = UNetTrainConfig.levels
    resolution: int = UNetTrainConfig.resolution
    lpips_weight: float = UNetTrainConfig.lpips_weight
    render_weight: float = UNetTrainConfig.render_weight
    lr: float = UNetTrainConfig.lr
    batch: int = UNetTrainConfig.batch
    seed: int = UNetTrainConfig.seed


class UNetMethod(Method):
    """Feed-forward U-Net: one forward pass per batch."""

    Config = UNetMethodConfig
    kind = "feed-forward"
    domain_setting = "dataset"  # faces-shift runs with the faces weights unless --set dataset=...

    def __init__(self, config: UNetMethodConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._net: UNet | None = None
        self._sidecar: dict[str, Any] = {}

    def reset(self) -> None:
        self._net = None

    def to(self, device: torch.device | str) -> UNetMethod:
        super().to(device)
        self.load()
        return self

    def load(self) -> UNet:
        if self._net is not None and next(self._net.parameters()).device == self.device:
            return self._net
        file = weights_file(self.config.dataset, self.config.weights_path)
        self._net, self._sidecar = load_unet(file, self.config.dataset, self.device)
        trained_fm = self._sidecar.get("forward_model")
        if trained_fm and trained_fm != self.config.forward_model:
            raise UNetWeightsError(f"{file} was trained under forward model {trained_fm!r}, not "
                                   f"{self.config.forward_model!r}; use --set forward_model={trained_fm}.")
        return self._net

    def fit(self, kimg: float = 1000.0, out: str | Path | None = None, device: str = "auto",
            minutes: float | None = None, progress: bool = True) -> Path:
        """Train on ``config.dataset``'s stream, export to ``out`` and use the new weights."""
        c = self.config
        cfg = UNetTrainConfig(dataset=c.dataset, kimg=kimg, batch=c.batch, resolution=c.resolution,
                              base_width=c.base_width, levels=c.levels, lr=c.lr, lpips_weight=c.lpips_weight,
                              render_weight=c.render_weight, seed=c.seed, device=device,
                              out=str(out) if out is not None else None, minutes=minutes, progress=progress)
        path = train_unet(cfg)
        self.config = dataclasses.replace(c, weights_path=str(path))
        self._net = None
        return path

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self._sidecar:
            d["weights"] = {k: self._sidecar.get(k) for k in ("file", "sha256", "network", "resolution",
                                                                 "images_seen", "params", "commit")}
        return d

    @torch.no_grad()
    def decompose(self, images: Tensor) -> Decomposition:
        start = time.perf_counter()
        if images.ndim != 4 or images.shape[1] != 3:
            raise JoinbenchError(f"unet expects (B, 3, H, W) images, got {tuple(images.shape)}.")
        net = self.load()
        fm = self.forward_model
        h, w = images.shape[-2:]
        r = int(self._sidecar["resolution"])
        x = images.detach().to(self.device, torch.float32)
        resized = (h, w) != (r, r)
        if resized:
            x = F.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        enc = net(x.clamp(0.0, 1.0))
        if resized:
            enc = F.interpolate(enc, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0.0, 1.0)
        parts = split_components(enc)
        lin = {c: fm.decode(c, parts[c], clip=True).to(images.device) for c in fm.components}
        extras = {"resized": {"from": (int(h), int(w)), "to": (r, r)}} if resized else {}
        return Decomposition(lin["albedo"], lin["shading"], lin.get("specular"), fm,
                             timings={"total": time.perf_counter() - start},
                             errors=[None] * images.shape[0], extras=extras)


register_method(
    "unet", UNetMethod,
    description="feed-forward: compact U-Net (image -> encoded albedo/shading/specular), supervised on the procedural stream",
)

__all__ = ["UNet", "UNetConfig", "UNetMethod", "UNetMethodConfig", "UNetTrainConfig", "UNetTrainer", "UNetTraining",
           "UNetWeightsError", "count_parameters", "export_unet", "load_unet", "train_unet", "weights_file"]
