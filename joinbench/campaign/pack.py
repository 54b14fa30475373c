"""What a GPU window brings back, within the device's limits: at most 8 files of 16 MiB.

A window folder (:mod:`joinbench.campaign.window`) is packed into one tar, split into parts
of ``part_mb`` (default 15 MiB) under a total ``budget_mb`` (default 60 MiB), plus its
``manifest.json`` beside the parts (readable without unpacking). What goes in, by priority:
the manifest and logs, then every exported weight file and sidecar, then the run folders in
the order they ran. A run that no longer fits is left out whole and named in the manifest's
``left_out``: a second call (``STAGES=cd``) runs it again. Checkpoints never travel.

Predictions are what makes runs big (the runner's ``<id>.npz`` keeps float32 linear and
encoded layers and the re-render: about 280 KB per 64 px image). A run travels with one
``predictions.f16.npz`` instead: the linear albedo, shading and specular of every image in
float16 (relative rounding at most 2^-11, i.e. at most 1.2e-4 in Reinhard-encoded and 2e-4 in
sRGB-encoded units, a fiftieth of an 8-bit step), about 55 KB per image. Where it is shipped
it is expanded back into ``predictions/<id>.npz`` (float32) for ``predictions:DIR``.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import JoinbenchError
from ..forward import COMPONENTS

COMPACT = "predictions.f16.npz"
MANIFEST = "manifest.json"
PART_PREFIX = "campaign.tar.part-"
MIB = 1 << 20
RUN_FILES = ("records.jsonl", "summary.json", "run.json", "reuse-key.json", "table.md", COMPACT)


def compact_predictions(run_dir: str | Path) -> Path | None:
    """``run_dir/predictions/<id>.npz`` -> ``run_dir/predictions.f16.npz`` (ids + float16 linear
    layers, images in id order); None when the run saved no predictions."""
    from ..env import write_atomic

    run_dir = Path(run_dir)
    files = sorted((run_dir / "predictions").glob("*.npz"))
    if not files:
        return None
    ids, layers = [], {c: [] for c in COMPONENTS}
    for f in files:
        with np.load(f, allow_pickle=False) as data:
            for c in COMPONENTS:
                layers[c].append(np.asarray(data[c], dtype=np.float16))
        ids.append(f.stem)
    buf = io.BytesIO()
    np.savez_compressed(buf, ids=np.array(ids), **{c: np.stack(v) for c, v in layers.items()})
    return write_atomic(run_dir / COMPACT, buf.getvalue())


def expand_predictions(run_dir: str | Path) -> Path:
    """``predictions.f16.npz`` -> ``predictions/<id>.npz`` (float32 linear layers, what
    ``joinbench run --method predictions:DIR`` reads); returns the predictions folder."""
    from ..imageio import write_npz

    run_dir = Path(run_dir)
    src = run_dir / COMPACT
    if not src.is_file():
        raise JoinbenchError(f"{run_dir} has no {COMPACT}; it came back without predictions.")
    out = run_dir / "predictions"
    with np.load(src, allow_pickle=False) as data:
        for k, sid in enumerate(data["ids"].tolist()):
            write_npz(out / f"{sid}.npz", **{c: data[c][k].astype(np.float32) for c in COMPONENTS})
    return out


def _tar_size(files: list[Path]) -> int:
    """Bytes a tar of ``files`` takes: a 512-byte header each, contents padded to 512."""
    return sum(512 + -(-f.stat().st_size // 512) * 512 for f in files)


def _items(window: Path, manifest: dict[str, Any]) -> list[tuple[str, list[Path]]]:
    """(name, files) groups in packing priority; a group travels whole or not at all."""
    logs = sorted(p for p in (window / "logs").rglob("*") if p.is_file()) if (window / "logs").is_dir() else []
    weights = sorted(p for p in (window / "weights").glob("*") if p.is_file()) if (window / "weights").is_dir() else []
    items = [("logs", logs), ("weights", weights)]
    for label, run in manifest.get("runs", {}).items():
        if run.get("status") != "done" or run.get("same_as"):  # a run made once travels once
            continue
        folder = window / run["folder"]
        files = [folder / f for f in RUN_FILES if (folder / f).is_file()]
        items.append((label, files))
    return items


def pack_window(window: str | Path, out: str | Path, budget_mb: float = 60, part_mb: float = 15) -> dict[str, Any]:
    """Pack ``window`` into ``out``: ``campaign.tar.part-00``, ``-01``, ... and ``manifest.json``.
    Returns the manifest as written (with ``packed`` and ``left_out``)."""
    from ..env import make_folder, write_json

    window, out = Path(window), make_folder(out)
    manifest = json.loads((window / MANIFEST).read_text())
    for run in manifest.get("runs", {}).values():  # the compact copy replaces the per-image files
        if run.get("status") == "done":
            compact_predictions(window / run["folder"])
    budget = int(budget_mb * MIB) - 64 * 1024  # the manifest beside the parts, and the tar's end blocks
    packed, left_out, used = [], [], 0
    chosen: list[Path] = []
    for name, files in _items(window, manifest):
        size = _tar_size(files)
        if used + size > budget:
            left_out.append(name)
            continue
        packed.append(name)
        chosen += files
        used += size
    manifest.update({"packed": packed, "left_out": left_out, "packed_bytes": used})
    write_json(window / MANIFEST, manifest)
    chosen.insert(0, window / MANIFEST)
    parts = int(part_mb * MIB)
    if -(-(used + 64 * 1024) // parts) > 7:
        raise JoinbenchError(f"{budget_mb} MiB in parts of {part_mb} MiB is more than 7 parts; the device returns 8 files.")
    for old in out.glob(f"{PART_PREFIX}*"):
        old.unlink()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in chosen:
            tar.add(f, arcname=f.relative_to(window).as_posix())
    data = buf.getvalue()
    for k in range(0, len(data), parts):
        (out / f"{PART_PREFIX}{k // parts:02d}").write_bytes(data[k:k + parts])
    write_json(out / MANIFEST, manifest)
    return manifest


def unpack_window(files: list[str | Path], dest: str | Path) -> Path:
    """The parts (any order; other files such as the manifest copy are ignored) -> the window
    folder ``dest`` (safe extraction: no absolute paths, links or paths outside ``dest``)."""
    from ..env import make_folder

    parts = sorted((Path(f) for f in files if Path(f).name.startswith(PART_PREFIX)), key=lambda p: p.name)
    if not parts:
        raise JoinbenchError(f"None of the given files is a {PART_PREFIX}NN part of a GPU window; give every part "
                             f"the device call returned (e.g. /work/.device/.../{PART_PREFIX}*).")
    numbers = [int(p.name[len(PART_PREFIX):]) for p in parts]
    if numbers != list(range(len(parts))):
        raise JoinbenchError(f"Parts {PART_PREFIX}NN are missing: got {', '.join(p.name for p in parts)}; give all of them.")
    dest = make_folder(dest)
    data = b"".join(p.read_bytes() for p in parts)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError) as exc:
        raise JoinbenchError(f"The window's parts do not form a whole tar ({exc}); copy them again from the device output.") from None
    if not (dest / MANIFEST).is_file():
        raise JoinbenchError(f"{dest} holds no {MANIFEST}: these parts are not a joinbench GPU window.")
    return dest
