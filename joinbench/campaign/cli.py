"""``joinbench campaign window|pack|ship|history``: the GPU campaign's commands (see the package docstring)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import JoinbenchError

campaign_app = typer.Typer(no_args_is_help=True, help="GPU campaign: one window on the GPU, shipped here, logged in reports/priors/history.md.")


@campaign_app.callback()
def _root() -> None:
    """GPU campaign: one window on the GPU, shipped here, logged in reports/priors/history.md."""


def _shares(text: str) -> dict[str, float]:
    try:
        return {k.strip(): float(v) for k, v in (item.split("=") for item in text.split(",") if item.strip())}
    except ValueError:
        raise JoinbenchError(f"--shares takes stage=fraction pairs, e.g. a=0.45,b=0.2,c=0.35 (got {text!r}).") from None


@campaign_app.command("window")
def window_cmd(
    minutes: float = typer.Argument(9.0, help="the window's whole budget in minutes (at most 9.5 on a GPU: the device call's limit is 10)"),
    out: Path = typer.Option(Path("runs/campaign/window"), "--out", "-o", help="window folder (manifest, logs, weights, runs)"),
    stages: str = typer.Option("abcd", "--stages", help="a priors, b encoders + U-Net, c join/join-s1 runs, d ablation"),
    device: str = typer.Option("cuda", "--device"),
    resolution: int = typer.Option(64, "--resolution", "-r"),
    batch: int = typer.Option(512, "--batch", "-b", help="prior training batch"),
    model_batch: int = typer.Option(64, "--model-batch", help="encoder and U-Net training batch"),
    limit: int = typer.Option(100, "--limit", help="test images per run (stages c, d)"),
    join_set: Optional[List[str]] = typer.Option(None, "--join-set", help="key=value for every JoIN run (CPU smoke: steps=2)"),
    gain_images: int = typer.Option(8, "--gain-images", help="test images of the encoders' stage-1 gain"),
    gain_steps: int = typer.Option(100, "--gain-steps", help="stage-1 steps of the encoders' gain measurement"),
    shares: str = typer.Option("a=0.45,b=0.2,c=0.35", "--shares", help="budget shares of stages a, b, c (d gets c's leftovers)"),
    overhead: float = typer.Option(0.5, "--overhead", help="minutes of a training stage kept for start-up and export"),
    skip_returned: bool = typer.Option(True, "--skip-returned/--redo", help="skip runs reports/priors/history.jsonl already holds for the installed priors"),
):
    """Run one GPU window: train from the shipped state, then evaluate, within MINUTES.

    Example (on the GPU machine; scripts/gpu_campaign.sh does this): joinbench campaign window 9 --out runs/campaign/window
    """
    from ..gan.bank import weights_dir
    from .history import current_window, load_history, weights_record
    from .window import WindowConfig, run_window

    skip: tuple[str, ...] = ()
    records = load_history()
    if skip_returned and not set(stages) & set("ab"):  # a continuation: the same priors as the logged window
        done = current_window(records, weights_record(weights_dir()))
        skip = tuple((done or {}).get("runs", ()))
    # a new window trains on new images: the data streams start from a seed of its own (its number)
    seed = records[-1]["window"] + 1 if records else 1
    cfg = WindowConfig(minutes=minutes, out=str(out), stages=stages, device=device, resolution=resolution, batch=batch,
                       model_batch=model_batch, limit=limit, join_set=tuple(join_set or ()), gain_images=gain_images, gain_steps=gain_steps,
                       shares=_shares(shares), overhead_minutes=overhead, skip_runs=skip, seed=seed)
    run_window(cfg)


@campaign_app.command("pack")
def pack_cmd(
    window: Path = typer.Argument(..., help="window folder (joinbench campaign window --out)"),
    out: Path = typer.Option(..., "--out", "-o", help="where the parts go ($OUT on the device)"),
    budget_mb: float = typer.Option(60.0, "--budget-mb", help="MiB returned at most"),
    part_mb: float = typer.Option(15.0, "--part-mb", help="MiB per part (the device returns files of at most 16 MiB)"),
):
    """Pack a window into campaign.tar.part-NN files + manifest.json within the device's return limits.

    Example: joinbench campaign pack runs/campaign/window --out "$OUT"
    """
    from .pack import pack_window

    m = pack_window(window, out, budget_mb, part_mb)
    typer.echo(f"packed {len(m['packed'])} groups ({m['packed_bytes'] / 2**20:.1f} MiB) into {out}"
               + (f"; left out (size): {', '.join(m['left_out'])}" if m["left_out"] else ""))


@campaign_app.command("ship")
def ship_cmd(
    files: List[Path] = typer.Argument(..., help="the files a device call returned (campaign.tar.part-NN, manifest.json)"),
    fd_n: int = typer.Option(5000, "--fd-n", help="FD-VGG samples per set for the gate and the sidecars"),
    force: bool = typer.Option(False, "--force", help="install priors whose FD ratio got worse"),
    limit: int = typer.Option(100, "--limit", help="test images scored per run"),
    device: str = typer.Option("cpu", "--device", help="FD-VGG and sample grids (scoring is always on the CPU)"),
    nn_pool: int = typer.Option(4096, "--nn-pool", help="training images of the nearest-neighbour figures (0: skip them)"),
    note: str = typer.Option("", "--note", help="a sentence for the window's row"),
    work: Path = typer.Option(Path("runs/campaign"), "--work", help="where windows are unpacked, pooled and scored"),
):
    """Check, gate, install, score and log a GPU window here (run from the repository root).

    Example: joinbench campaign ship /work/.device/out/campaign.tar.part-* --fd-n 5000
    """
    from .ship import ShipConfig, ship

    ship(ShipConfig(files=tuple(map(str, files)), work=str(work), fd_n=fd_n, force=force, limit=limit, device=device,
                    nn_pool=nn_pool, note=note))


@campaign_app.command("history")
def history_cmd(
    window: Optional[int] = typer.Option(None, "--window", help="record the installed weights as this window (replacing its row)"),
    note: str = typer.Option("", "--note", help="a sentence for that row"),
    date: Optional[str] = typer.Option(None, "--date", help="the window's date (default: the priors' sidecars)"),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="the window's GPU minutes (default: the priors' training minutes)"),
    readme: Path = typer.Option(Path("README.md"), "--readme", help="README whose generated Results block is refreshed"),
    baselines: int = typer.Option(0, "--baselines", help="with --window: score unet, color-retinex and trivial on this many test images of every results set into that row (0: none)"),
    work: Path = typer.Option(Path("runs/campaign"), "--work", help="where --baselines runs"),
):
    """Re-render reports/priors/history.md and the README's Results block from history.jsonl;
    with --window, first record the installed weights' sidecars as that window.

    Example: joinbench campaign history --window 0 --baselines 100 --note "the first H200 run, before the campaign"
    """
    from ..gan.bank import weights_dir
    from .history import load_history, put_record, shipped_record, update_readme, write_history

    records = load_history()
    if window is not None:
        record = shipped_record(weights_dir(), window, note, date, minutes)
        if baselines:
            from .ship import baseline_results

            record["results"] = baseline_results(work / f"window-{window}", baselines)
        records = put_record(records, record)
    write_history(records)
    changed = update_readme(readme, records)
    typer.echo(f"{len(records)} window(s) in reports/priors/history.md; README block {'updated' if changed else 'unchanged'}")
