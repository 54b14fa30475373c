"""Where a number came from: device, versions, commit; and atomic file writing, file hashes."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import resource
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from .errors import JoinbenchError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; a clear error when cuda is asked for but absent."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise JoinbenchError(f"Device {name!r} requested but CUDA is not available here; use --device cpu or --device auto.")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise JoinbenchError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise JoinbenchError(f"Device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s); "
                             "use cuda:0 .. cuda:N-1, or --device auto.")
    if dev.type not in ("cpu", "cuda"):  # mps, xpu, meta...: untested here, and often not built in
        raise JoinbenchError(f"Device {name!r} is not supported by joinbench; use auto, cpu, cuda or cuda:N.")
    return dev


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def physical_cores() -> int | None:
    """Physical CPU cores (distinct (package, core) pairs in /proc/cpuinfo); None where unknown."""
    try:
        pairs, package = set(), "0"
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                package = value.strip()
            elif key.strip() == "core id":
                pairs.add((package, value.strip()))
        return len(pairs) or None
    except OSError:
        return None


def device_name(device: torch.device) -> str:
    """The device as reports name it. A CPU: physical cores, logical CPUs (hardware threads), the
    ones this process may use (affinity, e.g. a container's limit) when fewer, and the intra-op
    threads torch computes with -- the number that matters for speed."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    logical = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    cores = physical_cores()
    parts = [platform.processor() or platform.machine()]
    if cores and cores != logical:
        parts.append(f"{_plural(cores, 'core')}, {_plural(logical, 'logical CPU')}")
    else:
        parts.append(_plural(cores or logical, "core"))
    if usable != logical:
        parts.append(f"{usable} usable")
    parts.append(f"torch {_plural(torch.get_num_threads(), 'thread')}")
    return f"cpu ({', '.join(parts)})"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def git_commit(cwd: Path | None = None) -> str:
    """The commit of the joinbench checkout; with local changes to tracked files
    ``<sha>+dirty.<hash>``, where ``<hash>`` is the first 12 hex digits of the sha256 of
    ``git diff HEAD`` (reports/ excluded: committed reports being regenerated do not make the code
    that produces them dirty). So a result made from an uncommitted tree -- a run, a shipped
    weights sidecar -- names exactly which changes it came from, and two different uncommitted
    trees never share a commit string (nor, through it, a suite's reuse key)."""
    cwd = cwd or Path(__file__).resolve().parent
    git = lambda *args: subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=10).stdout
    try:
        sha = git("rev-parse", "HEAD").decode().strip()
        if not sha:
            return "unknown"
        diff = git("diff", "HEAD", "--binary", "--", ":(top)", ":(top,exclude)reports")
        return sha + (f"+dirty.{hashlib.sha256(diff).hexdigest()[:12]}" if diff else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line() -> str:
    """The command as typed (``joinbench ...``), recorded with what it makes (summary.json, reports)."""
    import shlex

    return "joinbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def versions() -> dict[str, str]:
    from . import __version__

    out = {"joinbench": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for mod in ("torchvision", "lpips", "numpy", "skimage"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            pass
    if torch.cuda.is_available():
        out["cuda"] = str(torch.version.cuda)
    return out


def file_in_the_way(folder: Path) -> Path | None:
    """The file standing where ``folder`` or one of its parents must be a folder, if any."""
    for p in (folder, *folder.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def make_folder(path: str | Path, what: str = "--out") -> Path:
    """``mkdir -p path``, or one line naming the file that stands where a folder must be."""
    path = Path(path)
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise JoinbenchError(f"{what} {path}: {blocker} is a file; give a folder.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` so that readers see the old file or the
    whole new one, never a part, even if the process is killed.

    The bytes go to a temporary file beside ``path`` (``.<name>.<random>.tmp``, created with the
    permissions an ordinary ``open(path, "w")`` would give), are flushed to disk, and the file is
    then moved over ``path`` with ``os.replace``; on any error the temporary file is removed.
    Every file joinbench writes in one piece goes through here: JSON, tables, PNG (via
    :func:`joinbench.imageio.write_png` / :func:`joinbench.viz.save_image_atomic`), npz
    (:func:`joinbench.imageio.write_npz`) and safetensors (serialise with
    ``safetensors.torch.save`` and pass the bytes).
    """
    path = Path(path)
    if path.is_dir():
        raise JoinbenchError(f"{path} is a folder; give a file name to write (e.g. {path / ('out' + (path.suffix or '.png'))}).")
    blocker = file_in_the_way(path.parent)  # one line, not FileExistsError from mkdir
    if blocker is not None:
        raise JoinbenchError(f"{blocker} is a file, so {path} cannot be written under it; choose another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: str | Path, obj: Any) -> Path:
    return write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
