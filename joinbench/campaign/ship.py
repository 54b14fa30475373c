"""Ship a GPU window here (``bash scripts/ship_campaign.sh FILES...``): check, gate, install,
score, report, log.

In order, and stopping at the first problem (nothing is installed unless every check passed):

1. unpack the returned parts into ``runs/campaign/window-N/call-K/``;
2. check every returned weight file against the sha256 its sidecar records, and that each
   encoder is bound to the prior it will be shipped with;
3. measure the returned priors' FD-VGG at ``fd_n`` samples here (the sidecars get the figures)
   and compare each ratio with the shipped prior's at the same ``n``: if any got worse the
   window is refused, unless ``force`` (``FORCE=1``);
4. install the weights into ``joinbench/weights`` and redraw ``reports/priors/`` (sample grids,
   ``info.txt``, the nearest-neighbour figures);
5. expand the returned predictions and score them with exact fp32 LPIPS on the CPU, as
   ``predictions:join`` / ``predictions:join-s1`` in ``joinbench compare`` next to the U-Net,
   color-retinex, retinex and trivial (computed here), and the ablation variants as a spec of
   ``predictions:`` variants in ``joinbench ablate``; the reports land in
   ``reports/compare-gpu/`` and ``reports/ablation-gpu/`` with a provenance page naming every
   GPU run (command, device, seconds);
6. write the window's record into ``reports/priors/history.jsonl`` / ``history.md`` and the
   README's generated Results block.

A call that brings no weights (a second call with ``STAGES=cd``) continues the window whose
priors are installed: its runs join the earlier ones and its row is replaced, not added.
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import JoinbenchError
from .history import (
    HISTORY_JSONL,
    HISTORY_MD,
    current_window,
    load_history,
    put_record,
    results_record,
    update_readme,
    weights_record,
    write_history,
)
from .pack import MANIFEST, expand_predictions, unpack_window

PRED_METHODS = ("join", "join-s1")
BASELINES = ("unet", "color-retinex", "retinex", "trivial")
FORMATS = {"joinbench-gan-prior", "joinbench-encoder", "joinbench-unet"}


@dataclass
class ShipConfig:
    """Everything a ship does (``joinbench campaign ship --help``)."""

    files: tuple[str, ...] = ()
    work: str = "runs/campaign"  # window-N/ folders: unpacked calls, pooled predictions, suites
    fd_n: int = 5000
    force: bool = False
    limit: int = 100
    device: str = "cpu"
    nn_pool: int = 4096  # nearest-neighbour figures (0: skip)
    nn_n: int = 64
    note: str = ""
    reports: str = "reports"
    readme: str = "README.md"


def _cli(*args: str, cwd: str | Path | None = None) -> None:
    """Run a joinbench command (its output shown); a failure stops the ship with its command."""
    argv = [sys.executable, "-m", "joinbench", *args]
    print("$ joinbench " + " ".join(args), flush=True)
    if subprocess.run(argv, cwd=cwd).returncode != 0:
        raise JoinbenchError(f"`joinbench {' '.join(args)}` failed (output above); fix it and rerun the ship "
                             "(installed weights stay installed; it continues the same window).")


# -- 2. weights -------------------------------------------------------------------------------------
def _sidecars(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for f in sorted(folder.glob("*.json")):
        data = json.loads(f.read_text())
        if isinstance(data, dict) and data.get("format") in FORMATS:
            out.append((f, data))
    return out


def verify_weights(new: Path, shipped: Path) -> list[str]:
    """Problems with the returned weights: a file that is missing or does not match its sidecar's
    sha256, an encoder bound to a prior that will not be the shipped one."""
    from ..env import sha256_file

    problems = []
    priors_after = {}  # prior sidecar name -> generator sha256 once installed
    for f in sorted(shipped.glob("*.json")) + sorted(new.glob("*.json")):
        data = json.loads(f.read_text())
        if isinstance(data, dict) and data.get("format") == "joinbench-gan-prior":
            priors_after[f.name] = data["sha256"]["G"]
    for sc, data in _sidecars(new):
        files = data.get("files") or {"weights": data.get("file")}
        shas = data.get("sha256") if isinstance(data.get("sha256"), dict) else {"weights": data.get("sha256")}
        for part, name in files.items():
            path = new / str(name)
            if not path.is_file():
                problems.append(f"{sc.name}: {name} did not come back")
            elif sha256_file(path) != shas.get(part):
                problems.append(f"{sc.name}: {name} does not match the sha256 in its sidecar")
        if data["format"] == "joinbench-encoder":
            bound = (data.get("prior") or {})
            prior = bound.get("sidecar") or f"{data.get('dataset')}-{data.get('component')}.json"
            if priors_after.get(prior) != bound.get("sha256"):
                problems.append(f"{sc.name}: trained against a {prior} that is not the one that would be shipped")
    return problems


def fd_gate(new: Path, shipped: Path, n: int, device: str) -> list[dict[str, Any]]:
    """FD-VGG ratio of every returned prior (measured here at ``n`` samples, written into its
    sidecar) next to the shipped prior's at the same ``n`` (its sidecar's figure, or measured
    now when that was at another ``n``). ``worse`` marks a ratio that grew."""
    from ..gan.bank import load_prior
    from ..gan.fd import evaluate_priors

    rows = []
    by_dataset: dict[str, list[str]] = {}
    for _, data in _sidecars(new):
        if data["format"] == "joinbench-gan-prior":
            by_dataset.setdefault(data["dataset"], []).append(data["component"])
    for ds, comps in by_dataset.items():
        got = evaluate_priors([load_prior(ds, c, "cpu", new) for c in comps], n=n, device=device, update_sidecar=True)
        old: dict[str, Any] = {}
        remeasure = []
        for c in comps:
            sc = shipped / f"{ds}-{c}.json"
            if not sc.is_file():
                continue
            data = json.loads(sc.read_text())
            if data.get("fd_n") == n and data.get("fd_ratio") is not None:
                old[c] = data["fd_ratio"]
            else:
                remeasure.append(c)
        if remeasure:
            again = evaluate_priors([load_prior(ds, c, "cpu", shipped) for c in remeasure], n=n, device=device)
            old.update({c: r["ratio"] for c, r in again.items()})
        for c in comps:
            new_ratio, old_ratio = got[c]["ratio"], old.get(c)
            rows.append({"prior": f"{ds}-{c}", "shipped": old_ratio, "returned": new_ratio, "n": n,
                         "worse": old_ratio is not None and new_ratio is not None and new_ratio > old_ratio})
    return rows


def exported_files(folder: Path) -> list[str]:
    """The sidecars in ``folder`` and the weight files each names, in that order per model: a
    weight file without its sidecar (an export cut off before the sidecar was written) is not
    part of an export, and is never shipped."""
    names = []
    for sc, data in _sidecars(folder):
        files = data.get("files") or {"weights": data.get("file")}
        names += [str(f) for f in files.values() if f and (folder / str(f)).is_file()] + [sc.name]
    return names


def install(new: Path, shipped: Path) -> list[str]:
    """Copy every returned export (sidecar + its weight files) over the shipped files, replacing
    them, never adding copies; weight files no sidecar names stay behind."""
    names = exported_files(new)
    for name in names:
        shutil.copy2(new / name, shipped / name)
    return names


# -- 4. the priors' pages ------------------------------------------------------------------------------
def redraw_priors(reports: Path, installed: list[str], nn_pool: int, nn_n: int, device: str) -> None:
    from ..env import write_atomic

    priors = sorted({n[:-5] for n in installed if n.endswith(".json") and "-encoder" not in n and "-unet" not in n})
    for stem in priors:
        ds, comp = stem.split("-", 1)
        _cli("priors", "sample", "--dataset", ds, "--component", comp, "--n", "64", "--device", device,
             "--out", str(reports / "priors" / f"{stem}-samples.png"))
    info = subprocess.run([sys.executable, "-m", "joinbench", "priors", "info"], capture_output=True, text=True, check=True)
    write_atomic(reports / "priors" / "info.txt", info.stdout)
    if nn_pool > 0:
        for ds in sorted({p.split("-", 1)[0] for p in priors}):
            _cli("priors", "nearest", "--dataset", ds, "--component", "all", "--n", str(nn_n), "--pool", str(nn_pool),
                 "--device", device, "--format", "jpg", "--quiet", "--out", str(reports / "priors"))


# -- 5. scoring ------------------------------------------------------------------------------------------
def pool_predictions(call: Path, window_dir: Path) -> dict[str, Any]:
    """Expand every returned run's predictions into the window's pooled folders:
    ``pred/<method>/`` (stage c; ids are unique across datasets) and ``pred/ablation/<variant>/``
    (stage d). Returns label -> run facts (status, command, seconds, dataset, summary)."""
    from ..env import make_folder

    manifest = json.loads((call / MANIFEST).read_text())
    runs = {}
    for label in manifest.get("packed", []):
        run = manifest["runs"].get(label)
        if run is None:
            continue
        folder = call / run["folder"]
        preds = expand_predictions(folder)
        if run.get("variant"):
            dest = make_folder(window_dir / "pred" / "ablation" / _slug(run["variant"]))
        else:
            dest = make_folder(window_dir / "pred" / run["method"])
        for f in preds.glob("*.npz"):
            shutil.copy2(f, dest / f.name)
        summary = json.loads((folder / "summary.json").read_text())
        runs[label] = {**run, "summary_environment": summary.get("environment"), "timing": summary.get("timing"),
                       "dataset_info": summary.get("run", {}).get("dataset_info")}
    for label, run in manifest.get("runs", {}).items():  # the ablation's baseline, when it is stage c's run
        if run.get("same_as") in runs and run.get("variant"):
            src = window_dir / "pred" / runs[run["same_as"]]["method"]
            dest = make_folder(window_dir / "pred" / "ablation" / _slug(run["variant"]))
            for f in src.glob(f"{_id_prefix(run['dataset'])}-[0-9]*.npz"):
                shutil.copy2(f, dest / f.name)
            runs[label] = {**runs[run["same_as"]], **run}
    return runs


def _id_prefix(dataset: str) -> str:
    """The sample ids' prefix of a dataset (``bank:faces`` -> ``bank-faces``)."""
    return dataset.replace(":", "-")


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def check_banks(runs: dict[str, Any], resolution: int) -> None:
    """A ``bank:`` set is made by the priors: the runs' set must be the one the installed priors make."""
    from ..registry import create_dataset

    for label, run in runs.items():
        info = run.get("dataset_info") or {}
        if not str(run.get("dataset", "")).startswith("bank:") or "fingerprint" not in info:
            continue
        here = create_dataset(run["dataset"], resolution=resolution).fingerprint()
        if here != info["fingerprint"]:
            raise JoinbenchError(f"{label} was run on a {run['dataset']} made by other priors than the installed ones "
                                 "(fingerprints differ); ship the window that made it, or rerun it.")


def ablation_spec(variants_dir: Path, dataset: str, window: int, images: int = 100) -> str:
    """The default ablation spec with each variant's method replaced by its returned predictions
    (variants that have none yet are left out; empty text without the baseline's)."""
    import tomllib

    text = subprocess.run([sys.executable, "-m", "joinbench", "ablate", "--print-spec"], capture_output=True,
                          text=True, check=True).stdout
    spec = tomllib.loads(text)
    ids = f"{_id_prefix(dataset)}-[0-9]*.npz"
    have = {v["name"] for v in spec["variant"] if any((variants_dir / _slug(v["name"])).glob(ids))}
    if spec["baseline"] not in have:
        return ""  # every comparison is against the baseline: without it there is no table yet
    q = json.dumps  # a TOML basic string is a JSON string
    lines = [f"title = {q(spec.get('title', 'JoIN ablations') + f' (GPU window {window}, {images} test images, scored on the CPU)')}",
             f"baseline = {q(spec['baseline'])}", f"metrics = {q(spec['metrics'])}", ""]
    for v in spec["variant"]:
        folder = variants_dir / _slug(v["name"])
        if v["name"] not in have or v.get("baseline", spec["baseline"]) not in have:
            continue
        lines += ["[[variant]]", f"name = {q(v['name'])}", f"method = {q('predictions:' + str(folder.resolve()))}"]
        lines += [f"{k} = {q(v[k])}" for k in ("group", "baseline", "description") if k in v]
        lines.append("")
    return "\n".join(lines)


def _done_datasets(pred: Path, limit: int) -> list[str]:
    """Datasets for which both join and join-s1 returned all ``limit`` images."""
    from ..registry import list_datasets

    out = []
    for ds in ("materials", "materials-shift", "faces", "faces-shift", "bank:materials", "bank:faces"):
        if ds not in list_datasets():
            continue
        if all(len(list((pred / m).glob(f"{_id_prefix(ds)}-[0-9]*.npz"))) >= limit for m in PRED_METHODS):
            out.append(ds)
    return out


def score(window_dir: Path, window: int, limit: int, resolution: int, reports: Path, runs: dict[str, Any]) -> Path | None:
    """compare (+ ablation when its predictions came back) at ``limit`` images; returns compare.json."""
    from ..env import make_folder, write_atomic

    pred = window_dir / "pred"
    datasets = _done_datasets(pred, limit)
    if not datasets:
        print("no dataset has both join and join-s1 predictions yet: no comparison this time")
        return None
    out = window_dir / "compare"
    methods = [f"predictions:{m}" for m in PRED_METHODS] + list(BASELINES)
    _cli("compare", "--datasets", ",".join(datasets), "--methods", ",".join(methods), "--limit", str(limit),
         "--resolution", str(resolution), "--device", "cpu", "--out", str(out.resolve()), "--quiet",
         "--title", f"JoIN at {limit} test images (GPU window {window}; predictions:join / predictions:join-s1 are "
         "its outputs, scored here)", cwd=pred)
    dest = reports / "compare-gpu"
    shutil.rmtree(dest, ignore_errors=True)
    make_folder(dest / "figures")
    for name in ("compare.md", "compare.csv"):
        shutil.copy2(out / name, dest / name)
    for f in (out / "figures").glob("*.png"):
        shutil.copy2(f, dest / "figures" / f.name)
    write_atomic(dest / "provenance.md", provenance(window, runs, "c"))
    variants = pred / "ablation"
    ds = next((r["dataset"] for r in runs.values() if r.get("variant")), "materials")
    spec_text = ablation_spec(variants, ds, window, limit) if variants.is_dir() else ""
    if spec_text.count("[[variant]]") >= 2:
        spec = window_dir / "ablation-spec.toml"
        write_atomic(spec, spec_text)
        ab = window_dir / "ablation"
        _cli("ablate", "--dataset", ds, "--spec", str(spec), "--limit", str(limit), "--resolution", str(resolution),
             "--device", "cpu", "--out", str(ab), "--quiet")
        dest = make_folder(reports / "ablation-gpu")
        for ext in ("md", "csv", "tex"):
            shutil.copy2(ab / f"ablation.{ext}", dest / f"join-{ds}.{ext}")
        write_atomic(dest / "provenance.md", provenance(window, runs, "d"))
    return out / "compare.json"


def baseline_results(work: Path, limit: int, resolution: int = 64) -> dict[str, Any]:
    """Albedo LPIPS of ``unet``, ``color-retinex`` and ``trivial`` on every results dataset at
    ``limit`` images, computed here: the reference points of a window without GPU runs
    (window 0), ``bank:`` sets included (they depend on the installed priors)."""
    from .history import RESULT_DATASETS

    out = Path(work) / "baselines"
    _cli("compare", "--datasets", ",".join(RESULT_DATASETS), "--methods", "unet,color-retinex,trivial",
         "--limit", str(limit), "--resolution", str(resolution), "--device", "cpu", "--out", str(out), "--quiet",
         "--title", f"Baselines at {limit} test images (the campaign's reference points)")
    return results_record(out / "compare.json")


def provenance(window: int, runs: dict[str, Any], stage: str) -> str:
    """Where each GPU run of a report came from: its command, device, commit, seconds."""
    lines = [f"# Provenance: GPU window {window}, stage {stage}", "",
             "The JoIN rows of these reports are `predictions:DIR` runs: the outputs of the runs below, made on the "
             "GPU by `bash scripts/gpu_campaign.sh` (with every metric but LPIPS), returned as float16 linear layers "
             "and scored here with exact fp32 LPIPS by `bash scripts/ship_campaign.sh`. The history of windows: "
             "[`reports/priors/history.md`](../priors/history.md).", ""]
    for label, run in sorted(runs.items()):
        if run.get("stage") != stage:
            continue
        env = run.get("summary_environment") or {}
        lines.append(f"- **{label}**: `{run.get('command', '?')}` on {env.get('device_name', '?')}, commit "
                     f"{str(env.get('commit', '?'))[:12]}, {run.get('seconds', '?')} s"
                     + (f" (the same run as {run['same_as']})" if run.get("same_as") else ""))
    return "\n".join(lines) + "\n"


# -- the whole ship --------------------------------------------------------------------------------------
def ship(cfg: ShipConfig) -> dict[str, Any]:
    from ..env import git_commit, make_folder
    from ..gan.bank import weights_dir

    shipped = weights_dir()
    records = load_history(HISTORY_JSONL)
    staging = make_folder(Path(cfg.work) / "incoming")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    call = unpack_window(list(cfg.files), staging / stamp)
    manifest = json.loads((call / MANIFEST).read_text())
    resolution = int(manifest["config"]["resolution"])
    new = call / "weights"
    has_weights = new.is_dir() and any(new.glob("*.json"))
    if has_weights:
        problems = verify_weights(new, shipped)
        if problems:
            raise JoinbenchError("The returned weights do not check out, nothing installed: " + "; ".join(problems))
        gate = fd_gate(new, shipped, cfg.fd_n, cfg.device)
        for row in gate:
            print(f"{row['prior']}: FD ratio {_fmt(row['shipped'])} shipped -> {_fmt(row['returned'])} returned "
                  f"(n={row['n']})" + ("  WORSE" if row["worse"] else ""))
        worse = [r["prior"] for r in gate if r["worse"]]
        if worse and not cfg.force:
            raise JoinbenchError(f"Refused: the FD ratio of {', '.join(worse)} got worse than the shipped prior's; nothing "
                                 "installed. Ship anyway with FORCE=1 (bash) / --force.")
        number = (records[-1]["window"] + 1) if records else 1
        installed = install(new, shipped)
        redraw_priors(Path(cfg.reports), installed, cfg.nn_pool, cfg.nn_n, cfg.device)
        previous: dict[str, Any] = {}
    else:
        installed = []
        previous = current_window(records, weights_record(shipped)) or {}
        if not previous:
            raise JoinbenchError("These parts bring no weights, and no logged window has the installed priors: ship the "
                                 "window that trained them first.")
        number = previous["window"]
    evaluated = manifest.get("evaluated_with") or {}
    now = {k: v["sha256"] for k, v in weights_record(shipped)["priors"].items()}
    if evaluated and {k: now.get(k) for k in evaluated} != evaluated:
        raise JoinbenchError("The window's runs were made with other priors than the installed ones; they are not scored.")
    window_dir = make_folder(Path(cfg.work) / f"window-{number}")
    dest = window_dir / f"call-{stamp}"
    shutil.move(str(call), dest)
    runs = {**previous.get("run_facts", {}), **pool_predictions(dest, window_dir)}
    check_banks(runs, resolution)
    compare_json = score(window_dir, number, cfg.limit, resolution, Path(cfg.reports), runs)
    env = manifest.get("environment") or {}
    record = {
        **{k: previous[k] for k in ("date", "device", "minutes", "gpu_commit") if k in previous},
        "window": number, "commit": git_commit(),
        **({"date": _dt.date.today().isoformat(), "device": env.get("device"),
            "minutes": manifest["config"].get("minutes"), "gpu_commit": env.get("commit")} if has_weights else {}),
        "note": cfg.note or previous.get("note", ""),
        **weights_record(shipped),
        # per dataset, this call's scores replace the earlier call's (a continuation adds datasets);
        # a window without JoIN results still gets its baselines (new U-Nets, new bank: sets)
        "results": {**previous.get("results", {}),
                    **(results_record(compare_json, {f"predictions:{m}": m for m in PRED_METHODS}) if compare_json else
                       {} if previous.get("results") else baseline_results(window_dir, cfg.limit, resolution))},
        "runs": sorted(set(previous.get("runs", [])) | {k for k, r in runs.items() if r.get("status") == "done"}),
        "run_facts": {k: {f: r.get(f) for f in ("method", "dataset", "variant", "stage", "command", "seconds", "status",
                                                  "same_as", "folder")} for k, r in runs.items()},
        "calls": [*previous.get("calls", []), {"date": _dt.datetime.now().isoformat(timespec="seconds"),
                                               "stages": manifest["config"].get("stages"), "device": env.get("device"),
                                               "left_out": manifest.get("left_out", [])}],
    }
    records = put_record(records, record)
    write_history(records, HISTORY_JSONL, HISTORY_MD)
    update_readme(cfg.readme, records)
    print(f"window {number}: {len(installed)} weight files installed, {len(record['runs'])} runs logged; "
          f"{HISTORY_MD} and the README's Results block updated")
    if manifest.get("left_out"):
        print("left out by the device's size limit (run them with STAGES=cd): " + ", ".join(manifest["left_out"]))
    return record


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.2f}"
