"""Training checkpoints: one folder, swapped in atomically, with the sha256 of every file.

``<out>/checkpoint/`` holds ``models.safetensors`` (every trainer's weights), ``state.pt``
(optimiser states, RNG states, the data source's position; tensors and plain containers, read
back with ``torch.load(weights_only=True)``) and ``state.json`` (the counters, the config and
the sha256 of the two other files, checked before anything is loaded). A new checkpoint is
written beside the old one and swapped in with ``os.replace``, so a crash leaves either.

What a checkpoint holds comes from the :class:`~joinbench.training.loop.Checkpointable`
units (``name``, ``tensors``, ``load_tensors``, ``state``, ``load_state``) and the data
source (``state``, ``load_state``) the training hands in.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..env import sha256_file
from ..errors import JoinbenchError

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_VERSION = 1
FILES = ("models.safetensors", "state.pt", "state.json")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(out: Path, units: Sequence, data, scalars: dict[str, Any]) -> Path:
    """Write ``out/checkpoint`` (weights, optimiser + RNG state, scalars) as one directory swap."""
    from safetensors.torch import save_file

    final = out / CHECKPOINT_DIR
    tmp = out / f".{CHECKPOINT_DIR}.tmp"
    old = out / f"{CHECKPOINT_DIR}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors: dict[str, Tensor] = {}
    for u in units:
        tensors.update(u.tensors())
    save_file(tensors, str(tmp / "models.safetensors"), metadata={"format": "joinbench-training-checkpoint"})
    state = {"trainers": {u.name: u.state() for u in units}, "stream": data.state(), "torch_rng": torch.get_rng_state()}
    torch.save(state, tmp / "state.pt")
    sums = {f: sha256_file(tmp / f) for f in FILES[:2]}  # checked by load_checkpoint
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
        if all((d / f).is_file() for f in FILES):
            return d
    return None


def open_checkpoint(out: Path, resume: bool, error_cls: type[JoinbenchError] = JoinbenchError) -> tuple[Path | None, dict[str, Any] | None]:
    """Make the ``--out`` folder and find its checkpoint: (folder, its state.json) when resuming,
    (None, None) for a new run. One-line errors for a checkpoint without --resume, --resume
    without a complete checkpoint (it would silently start over) and an unreadable state.json."""
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


def check_resume(saved: dict[str, Any], cfg: Any, keys: Sequence[str], device: torch.device, path: Path,
                 error_cls: type[JoinbenchError] = JoinbenchError) -> None:
    """Refuse to resume when a setting in ``keys`` changed (they change the optimisation) or the
    device type differs (RNG states are per device type). ``saved``: the checkpoint's config."""
    def norm(v):
        return list(v) if isinstance(v, (tuple, list)) else v

    diffs = [f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in keys if norm(saved.get(k)) != norm(getattr(cfg, k))]
    if diffs:
        raise error_cls(f"Cannot resume {path}: settings differ from the checkpoint ({'; '.join(diffs)}); "
                        "use the original settings or another --out.")
    if saved.get("device_type") not in (None, device.type):
        raise error_cls(f"Cannot resume {path} on {device.type}: it was trained on {saved['device_type']} "
                        f"(RNG states are per device type); use --device {saved['device_type']}.")


def load_checkpoint(path: Path, units: Sequence, data, error_cls: type[JoinbenchError] = JoinbenchError) -> dict[str, Any]:
    """Check the sha256 sums, then load every unit's weights and state, the data position and
    torch's RNG; returns the checkpoint's scalars (state.json). Problems are one line."""
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
        for u in units:
            u.load_tensors(tensors)
            u.load_state(state["trainers"][u.name])
        data.load_state(state["stream"])
        torch.set_rng_state(state["torch_rng"])
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, EOFError, json.JSONDecodeError) as exc:
        raise error_cls(f"Cannot resume from {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
                        "delete that checkpoint folder or choose another --out.") from None
    return scalars


def truncate_log(path: Path, max_nimg: int) -> None:
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


__all__ = ["CHECKPOINT_DIR", "check_resume", "find_checkpoint", "load_checkpoint", "open_checkpoint", "save_checkpoint",
           "truncate_log"]
