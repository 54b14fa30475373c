"""Launch accounting (joinbench.launches, joinbench.profile): what the counter counts, where
it puts a host sync, phases, the N-vs-2N difference, CUDA-path emulation, and the regression
check: the small configurations of ``joinbench.profile.TESTS`` are recounted and may not
grow by more than 10% over the figures committed in reports/launches.json (counts are
deterministic; nothing here is timed).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from joinbench.cli import app
from joinbench.launches import (DEVICE, LaunchCounter, count_flops, count_launches, cuda_optimizer_defaults, mark,
                                phase, phases_of, refuse_optimizer)
from joinbench.profile import TESTS, ProfileConfig, measure_runs, measure_stepwise, profile

COMMITTED = Path(__file__).resolve().parents[1] / "reports" / "launches.json"
GROWTH = 1.10  # a count may grow by at most 10% over the committed figure


pytestmark = pytest.mark.usefixtures("tiny_env")  # one thread, a private JOINBENCH_HOME (latent banks computed afresh)


# -- what is counted --------------------------------------------------------------------
def test_views_and_ops_are_counted_one_per_dispatch():
    x = torch.randn(4, 3, device=DEVICE)
    t = count_launches(lambda: (x[1:].t() * 2 + 1).sum())
    assert t.ops == 5 and t.nonview == 3  # slice, t (views); mul, add, sum
    assert t.by_op["aten.slice"][0] == 1 and "aten.slice" in t.views and "aten.mul" not in t.views
    assert t.syncs == 0 and t.flops == 0


def test_syncs_are_reads_of_device_tensors_only():
    dev = torch.randn(5, device=DEVICE)  # made on the device stand-in
    gen = torch.Generator().manual_seed(0)

    def body():
        float(dev.sum())  # 1: .item() of a device value
        int(torch.randint(0, 9, (), generator=gen))  # host draw (a CPU generator): no sync on CUDA either
        dev[dev > 0]  # 2: boolean-mask index
        dev.nonzero()  # 3
        host = dev.cpu()  # 4: device -> host
        host.tolist()  # a host tensor: no sync
        float(host[0])  # nor here
        dev.tolist()  # 5
        torch.zeros(3, device=dev.device).nonzero()  # 6: device=x.device is the device
        torch.full((3,), 1.0).nonzero()  # host factory (no device): no sync
        dev.to(DEVICE)  # a device tensor to the device: an alias on CUDA, not counted

    t = count_launches(body)
    assert t.syncs == 6, t.sync_sites
    assert t.by_op["Tensor.cpu (device->host copy)"] == [1, 1, 0]
    assert "aten._to_copy" not in t.by_op
    # a host tensor moved to the device is a real copy (one op), and reading it syncs
    t = count_launches(lambda: float(torch.ones(2).to(DEVICE).sum()))
    assert t.by_op["aten._to_copy"][0] == 1 and t.syncs == 1


def test_cpu_of_a_device_tensor_does_not_turn_the_device_tensor_into_a_host_one():
    dev = torch.randn(3, device=DEVICE)
    t = count_launches(lambda: [dev.cpu() for _ in range(3)])
    assert t.syncs == 3  # each .cpu() of the device tensor is a copy and a sync


def test_phases_marks_backward_and_optimizer():
    lin = torch.nn.Linear(3, 2).to(DEVICE)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    x = torch.randn(4, 3, device=DEVICE)

    def body():
        with phase("step"):
            mark("forward")
            loss = lin(x).square().mean()
            mark("update")
            loss.backward()
            opt.step()
        x + 1

    t = count_launches(body)
    paths = set(t.by_phase)
    assert {"step/forward", "step/update/backward", "step/update/optimizer", "(unmarked)"} <= paths, paths
    assert t.by_phase["step/forward"][3] == 4 * 3 * 2 * 2  # the addmm's FLOPs
    assert sum(v[0] for v in t.by_phase.values()) == t.ops


def test_phase_costs_nothing_when_not_counting():
    assert phase("x") is phase("y")  # the shared null context
    mark("nothing")  # no state to change


def test_phases_of_wraps_named_functions_and_restores_them():
    import joinbench.join.losses as losses
    import joinbench.join.stage1 as stage1

    original = losses.noise_regularisation
    noise = [torch.randn(2, 1, 8, 8, device=DEVICE)]
    with phases_of({"joinbench.join.losses:noise_regularisation": "noise", "joinbench.nowhere:gone": "x"}) as done:
        assert done == ["joinbench.join.losses:noise_regularisation"]
        assert stage1.noise_regularisation is losses.noise_regularisation is not original  # every holder
        t = count_launches(lambda: losses.noise_regularisation(noise))
    assert losses.noise_regularisation is original and stage1.noise_regularisation is original
    assert set(t.by_phase) == {"noise"}


def test_flops_match_count_flops_and_flopcountermode():
    from torch.utils.flop_counter import FlopCounterMode

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.randn(2, 3, 8, 8)
    net(x)
    step = lambda: net(x).sum().backward()
    with FlopCounterMode(display=False) as ref:
        step()
    assert count_launches(step).flops == count_flops(step)[0] == ref.get_total_flops() > 0


# -- per unit: N vs 2N ------------------------------------------------------------------
class _Toy:
    """A unit with a one-off warm-up on its first call and work that grows with the batch."""

    def __init__(self, batch: int):
        self.lin = torch.nn.Linear(4, 4).to(DEVICE)
        self.opt = torch.optim.Adam(self.lin.parameters())
        self.x = torch.randn(batch, 4, device=DEVICE)

    def __call__(self, i: int) -> None:
        if i == 0:
            torch.randn(100, device=DEVICE).exp().sum()  # warm-up work, excluded
        self.opt.zero_grad()
        self.lin(self.x).square().mean().backward()
        self.opt.step()


def test_per_unit_counts_exclude_warm_up_and_do_not_depend_on_the_batch():
    a, each = measure_stepwise(_Toy(2), 3)
    b, _ = measure_stepwise(_Toy(7), 3)
    assert a.ops == b.ops and a.nonview == b.nonview and len(each) == 3
    assert all(t.ops == a.ops for t in each)
    assert "aten.exp" not in a.by_op
    c, _ = measure_stepwise(_Toy(2), 3, warmup=1)  # a shorter warm-up counts the same steady units
    assert (c.ops, c.syncs) == (a.ops, a.syncs)
    def run(n: int) -> None:  # a loop that only runs whole: a fresh toy per run
        toy = _Toy(2)
        for i in range(n):
            toy(i)

    whole = measure_runs(run, 3)
    assert (whole.ops, whole.nonview, whole.syncs) == (a.ops, a.nonview, a.syncs)


def test_cuda_path_optimizers():
    params = [torch.nn.Parameter(torch.randn(3, device=DEVICE)) for _ in range(20)]

    def steps(opt):
        def body():
            for p in params:
                p.grad = torch.ones_like(p)
            opt.step()
        body()  # state created
        return count_launches(body).ops

    loop = steps(torch.optim.Adam(params))
    with cuda_optimizer_defaults():
        foreach = steps(torch.optim.Adam(params))
    fused = steps(refuse_optimizer(torch.optim.Adam(params, lr=0.5), fused=True))
    assert fused < foreach < loop  # per-parameter loop > multi-tensor > one fused kernel
    assert refuse_optimizer(torch.optim.Adam(params, lr=0.5), fused=True).param_groups[0]["lr"] == 0.5


# -- the command ------------------------------------------------------------------------
def test_cli_profile_render_json_and_errors(tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["profile", "render", "--dataset", "faces", "-b", "1", "-r", "16", "-n", "1",
                              "--format", "json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["unit"] == "call" and data["ops"] > 100 and data["phases"][0]["phase"].startswith("render")
    assert data["command"] == "joinbench profile render --dataset faces --batch 1 --iterations 1 --resolution 16"
    for args, words in ((["profile", "trian"], "train"), (["profile", "all", "--out", "x.txt"], "--out FILE.md"),
                        (["profile", "render", "-f", "csv"], "md or json"),
                        (["profile", "all", "--out", str(tmp_path / "l.md"), "--names", "render mats"], "render materials"),
                        (["profile", "stage1", "-r", "32", "-n", "1", "-b", "1"], "priors' resolution")):
        res = runner.invoke(app, args)
        assert res.exit_code != 0 and words in str(res.exception), (args, res.exception)


# -- regression: committed figures ------------------------------------------------------
def _committed() -> dict:
    assert COMMITTED.is_file(), f"{COMMITTED} is missing: run `joinbench profile all --out reports/launches.md`"
    return json.loads(COMMITTED.read_text())["tests"]["results"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TESTS))
def test_counts_do_not_grow_over_the_committed_figures(name):
    committed = _committed()
    assert name in committed, f"no committed figure for {name!r}: rerun `joinbench profile all --out reports/launches.md`"
    want, got = committed[name], profile(TESTS[name])
    assert got["command"] == want["command"]
    fix = "; if the growth is meant, rerun `joinbench profile all --out reports/launches.md` and commit it"
    for key in ("ops", "nonview_ops", "syncs"):
        assert got[key] <= want[key] * GROWTH + 1e-9, (
            f"{name}: {key} per {got['unit']} grew from {want[key]:.1f} to {got[key]:.1f} "
            f"(allowed {GROWTH - 1:.0%}){fix}")


def test_grouped_conv_flops_equal_the_separate_convs():
    """A grouped convolution does the work of its groups run apart, forward and backward.
    torch's own formula counts a grouped conv's weight gradient ``groups`` times over; the
    fused bank is grouped convolutions, so its FLOPs would read up to G times too high."""
    g = 3
    torch.manual_seed(0)
    x = torch.randn(2, g * 4, 8, 8, requires_grad=True)
    w = torch.randn(g * 6, 4, 3, 3, requires_grad=True)

    def grouped():
        torch.nn.functional.conv2d(x, w, padding=1, groups=g).square().sum().backward()

    def apart():
        for xi, wi in zip(x.chunk(g, 1), w.chunk(g, 0)):
            torch.nn.functional.conv2d(xi, wi, padding=1).square().sum().backward()

    conv_flops = 2 * 8 * 8 * 9 * 4 * 6 * 2  # per group and pass: 2 MACs-as-FLOPs x pixels x taps x c_in x c_out x batch
    assert count_flops(grouped)[0] == count_flops(apart)[0] == g * 3 * conv_flops  # forward, grad input, grad weight
    assert count_launches(grouped).flops == g * 3 * conv_flops
