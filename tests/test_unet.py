"""The ``unet`` baseline: training lowers the loss, export -> load -> decompose, weight
errors, the runner, and ``joinbench train unet``. Tiny: 16 px, width 8, LPIPS weight 0."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from joinbench.baselines.unet import (
    UNet,
    UNetConfig,
    UNetTrainConfig,
    UNetTrainer,
    UNetWeightsError,
    export_unet,
    train_unet,
)

from joinbench.errors import JoinbenchError
from joinbench.training.data import create_training_dataset
from joinbench.registry import create_dataset, create_method

RES, WIDTH, BATCH = 16, 8, 8


@pytest.fixture(scope="module")
def stream_batches():
    """Five consecutive batches of the materials training stream (seed 0) plus a held-out one."""
    ds = create_training_dataset("materials", RES)
    gen = torch.Generator().manual_seed(0)
    big = ds.render_batch_at(ds.train_seeds(gen, 6 * BATCH), "cpu", RES)
    batches = [{k: v[i * BATCH:(i + 1) * BATCH] for k, v in big.items()} for i in range(6)]
    return ds, batches[:5], batches[5]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, stream_batches):
    ds, batches, _ = stream_batches
    cfg = UNetTrainConfig(resolution=RES, base_width=WIDTH, lpips_weight=0.0, batch=BATCH)
    trainer = UNetTrainer(cfg, "cpu", ds.forward_model)
    for b in batches:
        trainer.step(b)
    out = tmp_path_factory.mktemp("unet")
    return export_unet(out, "materials", trainer.net.eval(), RES, ds.forward_model.name, {"images_seen": 5 * BATCH})


def test_training_lowers_loss(stream_batches):
    ds, batches, held_out = stream_batches
    cfg = UNetTrainConfig(resolution=RES, base_width=WIDTH, lpips_weight=0.0, batch=BATCH, seed=0)
    trainer = UNetTrainer(cfg, "cpu", ds.forward_model)
    before = trainer.evaluate(held_out)["loss"]
    losses = [trainer.step(batches[i % len(batches)])["loss"] for i in range(40)]
    after = trainer.evaluate(held_out)["loss"]
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5  # ~0.81 at seed 0
    assert after < before
    # seeded: the same config starts from the same weights
    again = UNetTrainer(cfg, "cpu", ds.forward_model)
    assert again.evaluate(held_out)["loss"] == pytest.approx(before)


def test_export_load_decompose(exported):
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    assert sidecar["network"]["base_width"] == WIDTH and sidecar["resolution"] == RES
    assert sidecar["dtype"] == "float16" and len(sidecar["sha256"]) == 64
    method = create_method("unet", weights_path=str(exported)).to("cpu")
    images = torch.rand(3, 3, RES, RES)
    dec = method.decompose(images)
    for c in ("albedo", "shading", "specular"):
        t = dec.component(c)
        assert t.shape == images.shape and torch.isfinite(t).all() and (t >= 0).all()
    assert set(dec.timings) == {"total"}
    # another size is resized to the training resolution and back
    dec = method.decompose(torch.rand(2, 3, 24, 40))
    assert dec.albedo.shape == (2, 3, 24, 40) and torch.isfinite(dec.shading).all() and (dec.specular >= 0).all()


def test_prepare_picks_the_datasets_domain(exported):
    method = create_method("unet")
    method.prepare(create_dataset("faces-shift", resolution=RES), "cpu")
    assert method.config.dataset == "faces"
    pinned = create_method("unet", dataset="materials")  # set by the caller: kept
    pinned.prepare(create_dataset("faces", resolution=RES), "cpu")
    assert pinned.config.dataset == "materials"


def _one_line(exc: Exception) -> str:
    msg = str(exc)
    assert "\n" not in msg
    return msg


def test_missing_weights(tmp_path):
    missing = tmp_path / "nope" / "faces-unet.safetensors"
    method = create_method("unet", weights_path=str(missing), dataset="faces")
    with pytest.raises(JoinbenchError) as err:
        method.decompose(torch.rand(1, 3, RES, RES))
    msg = _one_line(err.value)
    assert str(missing) in msg and "joinbench train unet --dataset faces" in msg


def test_hash_mismatch_and_shapes(exported, tmp_path):
    bad = tmp_path / "materials-unet.safetensors"
    data = bytearray(exported.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    bad.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(UNetWeightsError) as err:
        create_method("unet", weights_path=str(bad)).to("cpu")
    msg = _one_line(err.value)
    assert str(bad) in msg and sidecar["sha256"] in msg

    # consistent hash but the sidecar names another network: shape error
    bad.write_bytes(exported.read_bytes())
    bad.with_suffix(".json").write_text(json.dumps({**sidecar, "network": {**sidecar["network"], "base_width": 4}}))
    with pytest.raises(UNetWeightsError) as err:
        create_method("unet", weights_path=str(tmp_path)).to("cpu")  # a folder works too
    assert "shape" in _one_line(err.value)


def test_run_benchmark(exported, tmp_path):
    from joinbench.runner import RunSettings, read_records, run_benchmark

    settings = RunSettings(method="unet", dataset="materials", resolution=RES, limit=2, batch_size=2, device="cpu",
                           metrics=("mse", "si-mse"), overrides={"weights_path": str(exported)}, out=tmp_path / "run",
                           progress=False)
    out = run_benchmark(settings)
    records = read_records(out / "records.jsonl")
    assert {r["id"] for r in records} and {"albedo", "shading", "specular", "image"} <= {r["component"] for r in records}


def test_minutes_budget_stops_and_exports(tmp_path):
    """The training wing's budget: a tiny --minutes stops after one step with an export (0 is an error)."""
    cfg = UNetTrainConfig(resolution=RES, base_width=WIDTH, lpips_weight=0.0, batch=4, kimg=1000.0, minutes=1e-6,
                          device="cpu", out=str(tmp_path), progress=False)
    path = train_unet(cfg)
    assert path.is_file() and json.loads(path.with_suffix(".json").read_text())["images_seen"] == 4
    with pytest.raises(JoinbenchError, match="--minutes must be"):
        train_unet(UNetTrainConfig(resolution=RES, minutes=0.0, device="cpu", out=str(tmp_path / "z")))


def test_resume_and_init_from_continue_the_unet(tmp_path):
    """A run interrupted by Ctrl-C resumes exactly (as a straight run), and --init-from continues an export:
    the weights carry over, images seen and the history add up."""
    from safetensors.torch import load_file

    def cfg(out, **kw):
        return UNetTrainConfig(**{**dict(resolution=RES, base_width=WIDTH, lpips_weight=0.0, batch=4, kimg=0.016,
                                         device="cpu", out=str(out), progress=False, log_kimg=0.008), **kw})

    from joinbench.training import clock

    straight = train_unet(cfg(tmp_path / "a"))
    advance = clock.TrainClock.advance

    def ctrl_c_in_the_second_batch(self):
        if self.step == 1:
            self._on_sigint(2, None)
        advance(self)

    with pytest.MonkeyPatch.context() as mp:  # not --minutes: its time-based lr schedule is not reproducible
        mp.setattr(clock.TrainClock, "advance", ctrl_c_in_the_second_batch)
        with pytest.raises(KeyboardInterrupt, match="--resume"):
            train_unet(cfg(tmp_path / "b"))
    resumed = train_unet(cfg(tmp_path / "b"), resume=True)
    a = load_file(str(straight.parent / "checkpoint" / "models.safetensors"))
    b = load_file(str(resumed.parent / "checkpoint" / "models.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    more = train_unet(cfg(tmp_path / "c", kimg=0.008, init_from=str(straight.parent)))
    side = json.loads(more.with_suffix(".json").read_text())
    assert side["images_seen"] == 24 and [h["images"] for h in side["history"]] == [16, 8]
    with pytest.raises(JoinbenchError, match="another|width"):
        train_unet(cfg(tmp_path / "d", base_width=4, init_from=str(straight.parent)))


def test_cli_trains_and_exports(tmp_path):
    cmd = [sys.executable, "-m", "joinbench", "train", "unet", "--dataset", "materials", "--kimg", "0.016",
           "--batch", "8", "--resolution", str(RES), "--lpips-weight", "0", "--width", str(WIDTH), "--device", "cpu",
           "--out", str(tmp_path), "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "parameters" in res.stdout and "exported" in res.stdout
    sidecar = json.loads((tmp_path / "materials-unet.json").read_text())
    assert sidecar["images_seen"] == 16 and sidecar["final_losses"]["loss"] > 0
    for key in ("wall_time_s", "device", "commit", "versions", "sha256", "params", "train"):
        assert key in sidecar
    assert (tmp_path / "materials-unet.safetensors").stat().st_size < 2 * sidecar["params"] + 20_000


def test_default_size_fits_budget():
    n = sum(p.numel() for p in UNet(UNetConfig()).parameters())
    assert 300_000 <= n and 2 * 2 * n <= 4_000_000  # materials + faces, float16
