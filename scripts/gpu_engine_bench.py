"""The engine's GPU measurement (issue 14, point 6) as one job: run by scripts/gpu_engine_bench.sh.

Sections, each under its own share of the wall budget (a section that would overrun is cut
short and says so, and the report is rewritten after every section, so a killed job still
returns what it measured):

1. **GANs**: ``train prior --component all`` iterations (the real iteration function, through
   joinbench.profile's adapter layer) at each batch size, eager and with CUDA graphs:
   images/s per GAN (every GAN of the bank sees ``batch`` images per iteration), kernels and
   launch calls per iteration from torch.profiler, FLOPs per iteration (torch.utils.flop_counter
   formulas, counted on the eager iteration) and the achieved TFLOP/s against the chip's peak.
2. **Stage 1** on ``--s1-images`` test images x ``--s1-steps`` steps (``JointInverter.invert``),
3. **PTI** on ``--pti-images`` x ``--pti-steps`` (``PivotalTuner.tune``): wall seconds (measured
   when the extrapolation from a short run fits the budget, otherwise extrapolated and marked
   so), kernels per step (profiler, difference of two run lengths), TFLOP/s.

Writes engine-gpu.json and engine-gpu.md into ``--out``. Timings are taken with the device
synchronised before and after; the first iterations (graph capture, cuDNN autotuning) are
not timed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from joinbench.env import device_name, git_commit, versions, write_atomic
from joinbench.launches import count_flops
from joinbench.profile import SUBJECTS, ProfileConfig

LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")
TARGETS = {"images_per_s_per_gan": 3000, "stage1_seconds": 60, "pti_seconds": 60}


def device_peaks(name: str) -> dict[str, Any] | None:
    try:  # where the FLOP/peak helpers live after issue 17's split, else before it
        from joinbench.flops import device_peak
    except ImportError:
        from joinbench.timing import device_peak
    return device_peak(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def profiled(fn: Callable[[], Any], device: torch.device) -> dict[str, int]:
    """Kernels run on the GPU, launch calls (kernel and graph launches) and, on a CPU, aten ops."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    events = prof.events()
    return {"kernels": sum(e.device_type == DeviceType.CUDA for e in events),
            "launch_calls": sum(e.name in LAUNCH_CALLS for e in events),
            "graph_launches": sum(e.name == "cudaGraphLaunch" for e in events),
            "aten_ops": sum(e.device_type == DeviceType.CPU and e.name.startswith("aten::") for e in events)}


def measure_peak(device: torch.device) -> dict[str, Any]:
    """bf16 and fp32 (TF32 if enabled) square matmuls, about a second each: what torch attains."""
    out = {}
    n = 8192 if device.type == "cuda" else 512
    for dtype in (torch.bfloat16, torch.float32):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        reps, elapsed = 0, 0.0
        while elapsed < 1.0:
            k = max(1, reps)
            elapsed += timed(lambda: [a @ b for _ in range(k)], device)
            reps += k
        out[str(dtype).split(".")[-1]] = 2 * n ** 3 * reps / elapsed / 1e12
        del a, b
    return {"n": n, "tflops": out, "tf32": bool(torch.backends.cuda.matmul.allow_tf32)}


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = torch.device(args.device)
        self.t0 = time.perf_counter()
        name = device_name(self.device)
        self.report: dict[str, Any] = {
            "format": "joinbench-engine-gpu", "command": " ".join(sys.argv), "commit": git_commit(),
            "device": name, "versions": versions(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": vars(args), "peak": {"datasheet": device_peaks(name)}, "gans": [], "stage1": None, "pti": None,
            "notes": [], "targets": TARGETS}

    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.t0)

    def note(self, text: str) -> None:
        print("note:", text, flush=True)
        self.report["notes"].append(text)

    def write(self) -> None:
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "engine-gpu.json", json.dumps(self.report, indent=2, default=str) + "\n")
        write_atomic(out / "engine-gpu.md", markdown(self.report))

    def section(self, name: str, fn: Callable[[float], None], share: float) -> None:
        budget = min(self.left() - 5, share)
        if budget <= 0:
            self.note(f"{name}: skipped, no budget left")
            return
        print(f"== {name} (budget {budget:.0f} s)", flush=True)
        try:
            fn(budget)
        except Exception as exc:  # noqa: BLE001 - one section's failure must not lose the others
            traceback.print_exc()
            self.note(f"{name}: failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.write()

    # -- GANs -----------------------------------------------------------------------------
    def gans(self, budget: float) -> None:
        from joinbench.gan.train import TrainConfig

        a, t_end = self.args, time.perf_counter() + budget
        has_graphs = "cuda_graphs" in {f.name for f in dataclasses.fields(TrainConfig)}
        modes = [False] + ([True] if self.device.type == "cuda" and has_graphs else [])
        if not has_graphs:
            self.note("this trainer has no cuda_graphs setting (the engine has not landed): eager only")
        for batch in a.batches:
            for graphs in modes:
                if time.perf_counter() > t_end:
                    self.note(f"GANs: batch {batch} {'graphs' if graphs else 'eager'} skipped (section budget)")
                    continue
                row = {"batch": batch, "mode": "graphs" if graphs else "eager"}
                self.report["gans"].append(row)
                opts = {"cuda_graphs": graphs} if has_graphs else {}
                cfg = ProfileConfig("train", a.dataset, "all", batch=batch, resolution=a.resolution, options=opts).resolved()
                row["setup_s"] = timed(lambda: setattr(self, "_subject", SUBJECTS["train"](cfg, self.device)), self.device)
                subject, step = self._subject, [0]

                def run(n: int) -> None:
                    for _ in range(n):
                        subject(step[0])
                        step[0] += 1

                run(a.warmup)  # graph capture, cuDNN autotuning, first Adam step
                sync(self.device)
                n, seconds = a.iters, timed(lambda: run(a.iters), self.device)
                while seconds < 2.0 and n < 50 * a.iters and time.perf_counter() + 2 * seconds < t_end:
                    n *= 2
                    seconds = timed(lambda: run(n), self.device)
                row.update(iterations=n, seconds=seconds, images_per_s_per_gan=batch * n / seconds,
                           iterations_per_s=n / seconds)
                k = a.profile_iters  # 16 = one R1 interval
                row.update({key: v / k for key, v in profiled(lambda: run(k), self.device).items()})
                if not graphs:
                    flops, _ = count_flops(lambda: run(k))
                    row["flops_per_iteration"] = flops / k
                else:
                    eager = next((r for r in self.report["gans"] if r["batch"] == batch and r["mode"] == "eager"), {})
                    row["flops_per_iteration"] = eager.get("flops_per_iteration")
                if row.get("flops_per_iteration"):
                    row["tflops"] = row["flops_per_iteration"] * row["iterations_per_s"] / 1e12
                print(json.dumps(row), flush=True)
                del self._subject, subject
                self.write()

    # -- stage 1 and PTI ------------------------------------------------------------------
    def inversion(self, kind: str, images: int, steps: int, budget: float) -> None:
        t_end = time.perf_counter() + budget
        cfg = ProfileConfig(kind, self.args.dataset, batch=images).resolved()
        row: dict[str, Any] = {"images": images, "steps": steps}
        self.report[kind] = row
        row["setup_s"] = timed(lambda: setattr(self, "_subject", SUBJECTS[kind](cfg, self.device)), self.device)
        subject = self._subject
        short = max(2, min(20, steps // 10))
        subject(2)  # warm-up (allocations, cuDNN autotuning)
        t_short = timed(lambda: subject(short), self.device)
        row["estimate_s"] = t_short / short * steps
        left = t_end - time.perf_counter()
        if row["estimate_s"] < 0.8 * left - 10:
            row["seconds"], row["how"] = timed(lambda: subject(steps), self.device), "measured"
        else:
            row["seconds"], row["how"] = row["estimate_s"], f"extrapolated from {short} steps (the full run did not fit the budget)"
        k1, k2 = profiled(lambda: subject(short), self.device), profiled(lambda: subject(2 * short), self.device)
        row.update({k: (k2[k] - k1[k]) / short for k in k1})
        f1, f2 = count_flops(lambda: subject(1))[0], count_flops(lambda: subject(2))[0]
        row["flops_per_step"] = f2 - f1
        row["tflops"] = row["flops_per_step"] * steps / row["seconds"] / 1e12
        row["image_steps_per_s"] = images * steps / row["seconds"]
        print(json.dumps(row), flush=True)
        del self._subject, subject

    def run(self) -> None:
        a = self.args
        self.write()
        self.section("peak", lambda b: self.report["peak"].update(measured=measure_peak(self.device)), 10)
        self.section("GANs", self.gans, a.gan_budget)
        self.section("stage1", lambda b: self.inversion("stage1", a.s1_images, a.s1_steps, b), a.s1_budget)
        self.section("pti", lambda b: self.inversion("pti", a.pti_images, a.pti_steps, b), a.pti_budget)
        self.report["wall_s"] = time.perf_counter() - self.t0
        self.write()


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.{digits}g}"


def markdown(r: dict[str, Any]) -> str:
    peak = r["peak"]
    spec = (peak.get("datasheet") or {}).get("tflops", {})
    meas = (peak.get("measured") or {}).get("tflops", {})
    pct = lambda t, key: f"{100 * t / spec[key]:.1f}%" if t and spec.get(key) else "–"
    lines = [f"# The engine on {r['device']}", "",
             f"Made with `bash scripts/gpu_engine_bench.sh` (`{r['command']}`), commit `{r['commit']}`, {r['date']}; "
             + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".", "",
             "Peaks (TFLOP/s): datasheet " + (", ".join(f"{k} {v:g}" for k, v in spec.items()) or "unknown")
             + "; measured matmul " + (", ".join(f"{k} {_f(v)}" for k, v in meas.items()) or "–") + ".", "",
             f"## GANs: `train prior --dataset {r['settings']['dataset']} --component all` at "
             f"{r['settings']['resolution']} px", "",
             "images/s per GAN: each of the bank's GANs trains on `batch` images per iteration. Kernels and launch "
             "calls per iteration: torch.profiler over `--profile-iters` iterations (16: one R1 interval). FLOPs: flop_counter formulas "
             f"(matmuls and convolutions only: a lower bound). Target: ≥ {TARGETS['images_per_s_per_gan']:,} images/s "
             "per GAN (stretch 10,000).", "",
             "| batch | mode | images/s per GAN | iterations/s | kernels/iter | launch calls/iter | graph launches/iter | "
             "aten ops/iter | GFLOP/iter | TFLOP/s | % bf16 peak | % tf32 peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in r["gans"]:
        fl = g.get("flops_per_iteration")
        lines.append(f"| {g['batch']} | {g['mode']} | {_f(g.get('images_per_s_per_gan'))} | {_f(g.get('iterations_per_s'))} | "
                     f"{_f(g.get('kernels'))} | {_f(g.get('launch_calls'))} | {_f(g.get('graph_launches'))} | "
                     f"{_f(g.get('aten_ops'))} | {_f(fl / 1e9 if fl else None)} | {_f(g.get('tflops'))} | {pct(g.get('tflops'), 'bf16')} | "
                     f"{pct(g.get('tflops'), 'tf32')} |")
    for kind, label in (("stage1", "Stage 1"), ("pti", "PTI")):
        s = r.get(kind)
        lines += ["", f"## {label}", ""]
        if not s or "seconds" not in s:
            lines.append("(not measured: see the notes)")
            continue
        lines.append(f"{s['images']} images x {s['steps']} steps in one batch: **{_f(s['seconds'])} s** ({s['how']}; "
                     f"target ≤ {TARGETS[kind + '_seconds']} s), {_f(s['image_steps_per_s'])} image-steps/s, "
                     f"{_f(s.get('kernels'))} kernels, {_f(s.get('launch_calls'))} launch calls and "
                     f"{_f(s.get('aten_ops'))} aten ops per step, "
                     f"{_f(s['flops_per_step'] / 1e9)} GFLOP per step, {_f(s['tflops'])} TFLOP/s "
                     f"({pct(s['tflops'], 'bf16')} of bf16, {pct(s['tflops'], 'tf32')} of tf32 peak); set-up "
                     f"{_f(s['setup_s'])} s.")
    if r["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dataset", default="materials")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[64, 256, 512])
    p.add_argument("--iters", type=int, default=20, help="timed iterations per GAN configuration (doubled until >= 2 s)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--profile-iters", type=int, default=16, help="iterations profiled and FLOP-counted (16: one R1 interval)")
    p.add_argument("--s1-images", type=int, default=100)
    p.add_argument("--s1-steps", type=int, default=1000)
    p.add_argument("--pti-images", type=int, default=100)
    p.add_argument("--pti-steps", type=int, default=300)
    p.add_argument("--budget", type=float, default=450, help="wall seconds for the whole job")
    p.add_argument("--gan-budget", type=float, default=200)
    p.add_argument("--s1-budget", type=float, default=110)
    p.add_argument("--pti-budget", type=float, default=110)
    p.add_argument("--out", default="runs/engine-gpu")
    args = p.parse_args()
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    Bench(args).run()


if __name__ == "__main__":
    main()
