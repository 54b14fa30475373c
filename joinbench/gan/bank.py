"""Load trained GAN priors (generator + discriminator + sidecar) and their latent statistics.

A prior is three files written by :func:`joinbench.gan.train.export_prior`::

    <dataset>-<component>-G.safetensors    EMA generator, float16
    <dataset>-<component>-D.safetensors    discriminator, float16
    <dataset>-<component>.json             sidecar: configs, sha256 of both files, training
                                           facts, FD-VGG figures

``component`` is albedo, shading, specular, or ``joint`` (one 9-channel generator, channels
albedo | shading | specular). Shipped priors live in ``joinbench/weights/``; ``path=`` names
another folder (e.g. a training run's ``--out``) or a sidecar file. Loading verifies both
hashes and every tensor shape; problems are one-line :class:`PriorError` messages.
``load_bank(dataset)`` gives the three independent priors; ``load_bank(dataset, joint=True)``
a bank of the single joint prior, for the "independent vs jointly trained" ablation.
``bank.fused_generator()`` / ``fused_discriminator()`` stack a bank's networks into one
(:mod:`joinbench.gan.fused`): what stage 1 and PTI run, one kernel per layer for all priors.

Loaded networks are float32, in eval mode, with ``requires_grad`` off (inversion optimises
latents and noise, not weights; PTI turns gradients back on for the generator it tunes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from ..errors import JoinbenchError, did_you_mean
from ..forward import COMPONENTS
from ..weights_io import load_checked
from .fused import FusedDiscriminator, FusedGenerator
from .model import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from .prior_format import FORMAT, export_stem, to_display

PRIOR_COMPONENTS = (*COMPONENTS, "joint")


class PriorError(JoinbenchError):
    """A GAN prior that is missing, corrupt or does not fit its configuration."""


def weights_dir() -> Path:
    """Where shipped priors live: ``joinbench/weights/`` inside the package."""
    return Path(__file__).resolve().parent.parent / "weights"


def latent_cache_dir() -> Path:
    from ..lpips_weights import joinbench_home

    return joinbench_home() / "gan" / "latents"


def _how_to_get(dataset: str, component: str) -> str:
    return (f"train it with `joinbench train prior --dataset {dataset} --component {component}` and pass its "
            f"--out folder on (`priors --path`, `train encoder --priors-path`, `--set priors_path=` for JoIN), "
            f"or copy the exported files into {weights_dir()}")


def sidecar_path(dataset: str, component: str, path: str | Path | None = None) -> Path:
    """The sidecar of ``dataset``/``component`` in ``path`` (a folder or a .json file) or the shipped weights."""
    if path is not None:
        p = Path(path).expanduser()
        if p.suffix == ".json":
            return p
        return p / f"{export_stem(dataset, component)}.json"
    return weights_dir() / f"{export_stem(dataset, component)}.json"


def read_sidecar(path: Path, dataset: str, component: str) -> dict[str, Any]:
    if not path.is_file():
        raise PriorError(f"No {dataset} {component} GAN prior: {path} does not exist; {_how_to_get(dataset, component)}.")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PriorError(f"{path}: unreadable sidecar ({type(exc).__name__}: {exc}); re-export the prior.") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PriorError(f"{path} is not a joinbench GAN prior sidecar (format {FORMAT!r} expected).")
    for key in ("generator", "discriminator", "files", "sha256"):
        if key not in data:
            raise PriorError(f"{path}: sidecar lacks {key!r}; re-export the prior.")
    return data


def _load_checked(module: torch.nn.Module, file: Path, expected_sha: str | None, sidecar: Path,
                  dataset: str, component: str) -> None:
    """Hash, key and shape checks, then load (see :func:`joinbench.weights_io.load_checked`)."""
    load_checked(module, file, expected_sha, sidecar, PriorError,
                 f"it is the {dataset} {component} GAN prior named in {sidecar}: {_how_to_get(dataset, component)}")


@dataclass
class Prior:
    """One loaded prior: generator (float32, eval), discriminator, configs, sidecar."""

    dataset: str
    component: str
    G: Generator
    D: Discriminator
    g_config: GeneratorConfig
    d_config: DiscriminatorConfig
    sidecar: dict[str, Any]
    sidecar_path: Path
    device: torch.device
    _means: dict[tuple, Tensor] = field(default_factory=dict, repr=False)
    latent_bank_source: str | None = field(default=None, repr=False)  # "cache" | "computed", last call

    # -- facts ----------------------------------------------------------------------------
    @property
    def channels(self) -> list[str]:
        """Components in the output's channel groups (joint: albedo, shading, specular)."""
        return list(COMPONENTS) if self.component == "joint" else [self.component]

    @property
    def sha256(self) -> str:
        """sha256 of the generator's safetensors file (keys latent caches)."""
        return self.sidecar["sha256"]["G"]

    num_ws = property(lambda self: self.G.num_ws)
    w_dim = property(lambda self: self.G.w_dim)
    z_dim = property(lambda self: self.G.z_dim)
    resolution = property(lambda self: self.G.resolution)

    # -- networks -------------------------------------------------------------------------
    def mapping(self, z: Tensor, truncation_psi: float = 1.0) -> Tensor:
        return self.G.mapping(z.to(self.device), truncation_psi)

    def synthesis(self, ws: Tensor, noise: Sequence[Tensor | None] | None = None, noise_mode: str = "random") -> Tensor:
        """ws (B, w_dim) for W or (B, num_ws, w_dim) for W+ -> image about [-1, 1]."""
        return self.G.synthesis(ws, noise=noise, noise_mode=noise_mode)

    def to_encoded(self, img: Tensor) -> Tensor:
        """Generator output -> encoded component space [0, 1] (clipped)."""
        return img.add(1.0).mul(0.5).clamp(0.0, 1.0)

    def split(self, img: Tensor) -> dict[str, Tensor]:
        """(B, 3k, H, W) -> {component: (B, 3, H, W)}."""
        return dict(zip(self.channels, img.split(3, dim=1)))

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, truncation_psi: float = 1.0, noise_mode: str = "const",
               batch: int = 64) -> Tensor:
        """``n`` samples in encoded space [0, 1] (z from a CPU generator seeded ``seed``)."""
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(int(seed)))
        out = [to_display(self.G(z[i:i + batch].to(self.device), truncation_psi, noise_mode=noise_mode))
               for i in range(0, n, batch)]
        return torch.cat(out)

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        return self.G.noise_shapes()

    def noise_buffers(self) -> list[Tensor]:
        return self.G.noise_buffers()

    def make_noise(self, batch: int = 1, generator: torch.Generator | None = None) -> list[Tensor]:
        """Fresh N(0, 1) noise maps (batch, 1, r, r) on the prior's device (drawn on ``generator``'s device)."""
        dev = generator.device if generator is not None else self.device
        return [n.to(self.device) for n in self.G.make_noise(batch, generator=generator, device=dev)]

    # -- latent statistics ----------------------------------------------------------------
    def mean_latent(self, n: int = 10_000, seed: int = 0, truncation_psi: float = 1.0) -> Tensor:
        """Mean of ``n`` mapped samples, (1, w_dim), cached in memory."""
        key = (int(n), int(seed), float(truncation_psi))
        if key not in self._means:
            self._means[key] = self.G.mean_latent(n, seed, truncation_psi)
        return self._means[key].clone()

    def latent_bank_path(self, n: int, truncation_psi: float, seed: int) -> Path:
        return latent_cache_dir() / f"{self.sha256}-n{int(n)}-psi{float(truncation_psi)!r}-seed{int(seed)}.safetensors"

    @torch.no_grad()
    def latent_bank(self, n: int = 100_000, truncation_psi: float = 0.7, seed: int = 123, chunk: int = 8192) -> Tensor:
        """``n`` mapped samples (n, w_dim) at truncation ``psi`` (z from a CPU generator seeded ``seed``).

        Cached on disk under ``$JOINBENCH_HOME/gan/latents/`` keyed by the generator file's
        sha256, n, psi and seed, so a kNN bank is computed once per prior."""
        from safetensors.torch import load_file, save

        from ..env import write_atomic

        path = self.latent_bank_path(n, truncation_psi, seed)
        if path.is_file():
            try:
                bank = load_file(str(path))["w"]
                if tuple(bank.shape) == (n, self.w_dim):
                    self.latent_bank_source = "cache"
                    return bank.to(self.device)
            except Exception:  # noqa: BLE001 - a broken cache file is recomputed
                pass
        gen = torch.Generator().manual_seed(int(seed))
        parts = []
        for i in range(0, n, chunk):
            z = torch.randn(min(chunk, n - i), self.z_dim, generator=gen)
            parts.append(self.G.mapping(z.to(self.device), truncation_psi).float().cpu())
        bank = torch.cat(parts).contiguous()
        meta = {"sha256": self.sha256, "n": str(n), "psi": repr(float(truncation_psi)), "seed": str(seed),
                "dataset": self.dataset, "component": self.component}
        write_atomic(path, save({"w": bank}, metadata=meta))
        self.latent_bank_source = "computed"
        return bank.to(self.device)


def load_prior(dataset: str, component: str, device: str | torch.device = "cpu",
               path: str | Path | None = None) -> Prior:
    """Load the ``dataset``/``component`` prior (component: albedo | shading | specular | joint)."""
    from ..env import resolve_device

    if component not in PRIOR_COMPONENTS:
        raise PriorError(f"Unknown prior component {component!r}.{did_you_mean(component, PRIOR_COMPONENTS)} Use one of {', '.join(PRIOR_COMPONENTS)}.")
    dev = resolve_device(device)
    sc_path = sidecar_path(dataset, component, path)
    if not sc_path.exists():
        from ..datasets.base import domain_of
        from ..registry import DATASETS

        if dataset not in DATASETS:  # a typo, not a prior still to train: say which names exist
            raise PriorError(DATASETS._unknown_message(dataset))
        domain = domain_of(dataset)
        if path is None and domain not in (None, dataset):  # faces-shift, real-faces: priors live with their domain
            raise PriorError(f"There are no {dataset} priors: priors are trained on the procedural {domain!r} data, and "
                             f"JoIN uses them for {dataset!r}; pass --dataset {domain} (load_prior({domain!r}, ...)).")
    sc = read_sidecar(sc_path, dataset, component)
    try:
        g_cfg = GeneratorConfig.from_dict(sc["generator"])
        d_cfg = DiscriminatorConfig.from_dict(sc["discriminator"])
    except (TypeError, ValueError) as exc:
        raise PriorError(f"{sc_path}: bad network config ({exc}); re-export the prior.") from None
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; leave the caller's RNG alone
        G, D = Generator(g_cfg), Discriminator(d_cfg)
    for part, module in (("G", G), ("D", D)):
        name = sc["files"].get(part)
        if not name:
            raise PriorError(f"{sc_path}: sidecar names no {part} file; re-export the prior.")
        _load_checked(module, sc_path.parent / name, sc["sha256"].get(part), sc_path, dataset, component)
    G = G.to(dev).eval().requires_grad_(False)
    D = D.to(dev).eval().requires_grad_(False)
    return Prior(dataset, component, G, D, g_cfg, d_cfg, sc, sc_path, dev)


@dataclass
class GanBank:
    """One prior per component of a dataset (``bank["albedo"].G`` ...)."""

    dataset: str
    priors: dict[str, Prior]

    def __getitem__(self, component: str) -> Prior:
        try:
            return self.priors[component]
        except KeyError:
            raise PriorError(f"This {self.dataset} bank has no {component!r} prior (it holds {', '.join(self.priors)}).") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.priors)

    def __len__(self) -> int:
        return len(self.priors)

    def items(self):
        return self.priors.items()

    @property
    def components(self) -> list[str]:
        """The priors' names (``["joint"]`` for a joint bank; see :attr:`produces`)."""
        return list(self.priors)

    @property
    def joint(self) -> bool:
        """True for the bank of the jointly trained prior (``load_bank(..., joint=True)``)."""
        return list(self.priors) == ["joint"]

    @property
    def produces(self) -> list[str]:
        """The components the bank's generators produce, in albedo, shading, specular order."""
        made = {c for p in self.priors.values() for c in p.channels}
        return [c for c in COMPONENTS if c in made]

    @property
    def generators(self) -> dict[str, Generator]:
        return {c: p.G for c, p in self.priors.items()}

    @property
    def discriminators(self) -> dict[str, Discriminator]:
        return {c: p.D for c, p in self.priors.items()}

    def mean_latents(self, n: int = 10_000, seed: int = 0, truncation_psi: float = 1.0) -> dict[str, Tensor]:
        return {c: p.mean_latent(n, seed, truncation_psi) for c, p in self.priors.items()}

    def fused_generator(self, names: Sequence[str] | None = None) -> FusedGenerator:
        """The generators of ``names`` (default: every prior, in order) as one fused network, a
        new stacked copy in their device, dtype and mode (see :mod:`joinbench.gan.fused`)."""
        return fuse_priors({n: self[n] for n in (names or self.priors)})

    def fused_discriminator(self, names: Sequence[str] | None = None) -> FusedDiscriminator:
        """As :meth:`fused_generator`, for the discriminators."""
        return fuse_priors({n: self[n] for n in (names or self.priors)}, "D")


def fuse_priors(priors: Mapping[str, Prior], part: str = "G") -> FusedGenerator | FusedDiscriminator:
    """The generators (``part="G"``) or discriminators (``"D"``) of ``priors`` as one fused
    network, members in the mapping's order; priors of different network configs are a
    one-line :class:`PriorError`."""
    cls = FusedDiscriminator if part == "D" else FusedGenerator
    try:
        return cls.from_modules([getattr(p, part) for p in priors.values()])
    except ValueError as exc:
        names = ", ".join(f"{p.dataset} {c}" for c, p in priors.items())
        raise PriorError(f"The priors {names} run as one fused bank, which needs one network config, but {exc}; "
                         "train them with the same settings (`joinbench train prior --component all`).") from None


def load_bank(dataset: str, device: str | torch.device = "cpu", components: Sequence[str] | None = None,
              path: str | Path | None = None, joint: bool = False) -> GanBank:
    """The per-component priors of ``dataset`` (default albedo, shading, specular).

    ``joint=True``: the jointly trained prior instead (the ablation "independent vs jointly
    trained priors"), a bank holding the single ``"joint"`` prior whose 9 output channels are
    albedo | shading | specular (:meth:`Prior.split`). It produces every component, so
    ``components`` (e.g. a forward model's) is only checked for valid names; stage 1 runs it
    with ``Stage1Config.joint_prior``."""
    if joint:
        unknown = [c for c in (components or ()) if c not in COMPONENTS]
        if unknown:
            raise PriorError(f"Unknown component(s) {', '.join(map(repr, unknown))} for the joint prior; it produces "
                             f"{', '.join(COMPONENTS)}.")
        return GanBank(dataset, {"joint": load_prior(dataset, "joint", device, path)})
    comps = tuple(components) if components is not None else COMPONENTS
    return GanBank(dataset, {c: load_prior(dataset, c, device, path) for c in comps})


def list_priors(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Sidecars found in ``path`` (default: the shipped weights), with their file name. A JSON
    file that cannot be read is listed as ``{"sidecar": ..., "problem": ...}`` rather than
    dropped, so a damaged prior does not silently vanish from ``priors info``."""
    folder = Path(path).expanduser() if path is not None else weights_dir()
    if not folder.is_dir():
        raise PriorError(f"--path {folder} is not a folder; give the folder that holds <dataset>-<component>.json sidecars.")
    out = []
    for f in sorted(folder.glob("*.json")):
        try:
            data = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            out.append({"sidecar": str(f), "problem": f"unreadable JSON ({type(exc).__name__})"})
            continue
        if isinstance(data, dict) and data.get("format") == FORMAT:
            out.append({**data, "sidecar": str(f)})
    return out


def check_prior_files(record: dict[str, Any]) -> str:
    """``ok``, or what is wrong with the G / D files a sidecar names (missing, sha256 mismatch)."""
    from ..env import sha256_file

    folder = Path(record["sidecar"]).parent
    problems = []
    for part, name in sorted((record.get("files") or {}).items()):
        f = folder / name
        if not f.is_file():
            problems.append(f"{part} missing")
        elif (record.get("sha256") or {}).get(part) not in (None, sha256_file(f)):
            problems.append(f"{part} sha256 mismatch")
    return ", ".join(problems) or "ok"


__all__ = [
    "GanBank",
    "PRIOR_COMPONENTS",
    "Prior",
    "PriorError",
    "latent_cache_dir",
    "check_prior_files",
    "fuse_priors",
    "list_priors",
    "load_bank",
    "load_prior",
    "read_sidecar",
    "sidecar_path",
    "weights_dir",
]
