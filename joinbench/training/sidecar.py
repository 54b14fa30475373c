"""What every exported model's JSON sidecar says about its training, and where a run starts from.

GPU time comes in short windows, so a model is trained over many runs: ``--init-from shipped``
(or a folder of exports) continues the shipped weights instead of starting from nothing. A
sidecar therefore records the cumulative ``images_seen`` and ``wall_time_s`` and a
``history``: one entry per training run that contributed (date, device, images and wall time
of that run, commit, throughput). :func:`run_record` builds those common fields for the
export of a finished run; each family (priors, encoders, U-Net) adds its own.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
from pathlib import Path
from typing import Any

import torch

from ..errors import JoinbenchError

SHIPPED = "shipped"


def resolve_init_from(value: str | Path, error_cls: type[JoinbenchError] = JoinbenchError) -> Path:
    """``--init-from``: ``shipped`` -> ``joinbench/weights/``; else a folder of exports (a file names its folder)."""
    if str(value) == SHIPPED:
        from ..gan.bank import weights_dir  # joinbench/weights/: every shipped model

        return weights_dir()
    p = Path(value).expanduser()
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise error_cls(f"--init-from {value}: no such folder; give 'shipped' (joinbench/weights) or a folder holding "
                        "exported weights and their sidecars.")
    return p


def last_logged_rate(log_path: Path) -> float | None:
    """images/s of the last ``log.jsonl`` line (the sidecars' throughput), None without one."""
    if not log_path.is_file():
        return None
    with contextlib.suppress(Exception):
        return json.loads(log_path.read_text().splitlines()[-1]).get("images_per_s")
    return None


def history_of(sidecar: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs behind an exported model: its ``history``, or for a sidecar written before
    histories existed one entry rebuilt from its own fields."""
    if isinstance(sidecar.get("history"), list):
        return [_legacy_commit(dict(h)) for h in sidecar["history"]]
    images = int(sidecar.get("images_seen") or 0)
    if not images:
        return []
    wall = sidecar.get("wall_time_s")
    entry = {"date": sidecar.get("created"), "device": sidecar.get("device"), "images": images, "wall_time_s": wall,
             "commit": sidecar.get("commit"), "images_per_s": sidecar.get("throughput_images_per_s"),
             "init_from": None}
    return [_legacy_commit(entry)]


def _legacy_commit(entry: dict[str, Any]) -> dict[str, Any]:
    """Sidecars written before commits recorded their diff say ``<sha>+dirty``: the training ran
    on uncommitted changes that nobody can name any more. The history keeps the commit and says
    so in words, instead of passing the bare marker on as if it identified code."""
    commit = str(entry.get("commit") or "")
    if commit.endswith("+dirty"):
        entry["commit"] = commit.removesuffix("+dirty")
        entry["tree"] = "uncommitted changes on top of this commit; their diff was not recorded"
    return entry


def init_record(sidecar: dict[str, Any], source: str | Path, **extra: Any) -> dict[str, Any]:
    """What a checkpoint keeps about the export a run was initialised from (``source``: as the
    user named it, ``shipped`` or a folder)."""
    return {"from": str(source), "images_seen": int(sidecar.get("images_seen") or 0), "history": history_of(sidecar),
            **extra}


def run_record(cur_nimg: int, steps: int, wall_s: float, device: torch.device, log_path: Path, train: dict[str, Any],
               init: dict[str, Any] | None) -> dict[str, Any]:
    """The sidecar fields every export shares: cumulative images and wall time (the
    initialisation's plus this run's), this run's throughput, device, commit, versions, the
    run's settings and the history with this run appended."""
    from ..env import device_name, git_commit, versions

    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    dev, commit = device_name(device), git_commit()
    entry = {"date": now, "device": dev, "images": int(cur_nimg), "wall_time_s": round(wall_s, 1), "commit": commit,
             "images_per_s": round(cur_nimg / wall_s, 2) if wall_s > 0 else None,
             "init_from": (init or {}).get("from")}
    history = [*((init or {}).get("history") or []), entry]
    images = int((init or {}).get("images_seen") or 0) + int(cur_nimg)
    wall = sum(float(h.get("wall_time_s") or 0.0) for h in history)
    return {"images_seen": images, "kimg": images / 1000, "steps": int(steps), "wall_time_s": round(wall, 1),
            "throughput_images_per_s": last_logged_rate(log_path), "device": dev, "commit": commit,
            "versions": versions(), "train": train, "history": history, "created": now}


__all__ = ["SHIPPED", "history_of", "init_record", "last_logged_rate", "resolve_init_from", "run_record"]
