"""Training-free baselines: trivial, retinex, color-retinex (baselines/trivial.py, retinex.py)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from joinbench import create_method, create_forward_model, list_methods
from joinbench.errors import JoinbenchError
from joinbench.forward import reinhard_decode, reinhard_encode, srgb_decode

NAMES = ("trivial", "retinex", "color-retinex")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _edge_images() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "black": torch.zeros(2, 3, 16, 16),
        "white": torch.ones(1, 3, 16, 16),
        "constant": torch.full((1, 3, 12, 20), 0.37),
        "noise": torch.rand(2, 3, 17, 33, generator=g),
        "salt-pepper": (torch.rand(1, 3, 16, 16, generator=g) > 0.5).float(),
        "one-pixel": torch.rand(1, 3, 1, 1, generator=g),
    }


def _scene(albedo_fn, H: int = 64, W: int = 64):
    """Piecewise-constant reflectance times a smooth shading, rendered with the default
    (Reinhard s=4) forward model. Returns display image (1,3,H,W), albedo, shading (3,H,W)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    albedo = albedo_fn(H, W)
    # a left-to-right falloff times a soft highlight blob: smooth, max |d log S| ~ 0.03/px
    shading = (0.35 + 0.9 * x) * (1 + 0.3 * torch.exp(-((x - 0.6) ** 2 + (y - 0.4) ** 2) / 0.08))
    shading = shading.expand(3, H, W)
    image = reinhard_encode(albedo * shading)[None]
    return image, albedo, shading


def _paint(background, *squares):
    def fn(H, W):
        a = torch.empty(3, H, W)
        a[:] = torch.tensor(background)[:, None, None]
        for (r0, r1, c0, c1), colour in squares:
            a[:, r0:r1, c0:c1] = torch.tensor(colour)[:, None, None]
        return a
    return fn


# Two coloured squares on gray, clearly different in intensity (gray Retinex sees them).
TWO_SQUARES = _paint((0.7, 0.7, 0.7), ((8, 28, 8, 28), (0.8, 0.25, 0.15)), ((36, 58, 30, 56), (0.1, 0.2, 0.6)))
# A low-contrast colour edge: the square's mean intensity is only 5 % above the background's
# (log ratio 0.052 < gray threshold 0.075) but its hue differs strongly.
LOW_CONTRAST_COLOUR = _paint((0.5, 0.5, 0.5), ((16, 48, 16, 48), (0.9, 0.15, 0.53)))
INSIDE = {  # regions 2 px inside each constant patch of TWO_SQUARES
    "square1": (slice(10, 26), slice(10, 26)),
    "square2": (slice(38, 56), slice(32, 54)),
    "background": (slice(0, 6), slice(0, 64)),
}


def si_mse(gt: torch.Tensor, pred: torch.Tensor) -> float:
    """MSE after the least-squares global scale of the prediction (linear space)."""
    gt, pred = gt.double(), pred.double()
    alpha = (gt * pred).sum() / (pred * pred).sum().clamp_min(1e-12)
    return float(((gt - alpha * pred) ** 2).mean())


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


# -- interface -------------------------------------------------------------------------------
def test_registered():
    assert set(NAMES) <= set(list_methods())
    assert list_methods("*retinex") == ["color-retinex", "retinex"]
    assert create_method("retinex").config.colour is False
    assert create_method("color-retinex").config.colour is True


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_device(name, device):
    method = create_method(name).to(device)
    images = torch.rand(3, 3, 24, 40, generator=torch.Generator().manual_seed(1)).to(device)
    out = method.decompose(images)
    for c in ("albedo", "shading", "specular"):
        t = out.component(c)
        assert t.shape == images.shape and t.dtype == torch.float32 and t.device.type == device, c
    assert torch.equal(out.specular, torch.zeros_like(images))
    assert out.errors == [None] * 3
    assert set(out.timings) == {"total"} and out.timings["total"] >= 0
    assert out.forward_model == create_forward_model("reinhard")
    assert out.rerender.shape == images.shape


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", list(_edge_images()))
def test_edge_images_finite_nonnegative(name, kind):
    images = _edge_images()[kind]
    out = create_method(name).decompose(images)
    for c in ("albedo", "shading", "specular"):
        t = out.component(c)
        assert torch.isfinite(t).all(), (kind, c)
        assert (t >= 0).all(), (kind, c)
    assert torch.isfinite(out.rerender).all()


# -- re-rendering ------------------------------------------------------------------------------
@pytest.mark.parametrize("forward_model", ["reinhard", "srgb", "reinhard-nospecular"])
@pytest.mark.parametrize("name", ["retinex", "color-retinex"])
def test_retinex_rerender_reproduces_input(name, forward_model):
    images = torch.cat([_scene(TWO_SQUARES)[0], torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))])
    # the Reinhard decoder caps display values at 1 - 1e-4; stay below that
    images = images.clamp(0.0, 0.999)
    out = create_method(name, forward_model=forward_model).decompose(images)
    assert out.forward_model.name == forward_model
    assert torch.allclose(out.rerender, images, atol=1e-4)
    # shading is gray (one value per pixel, copied to the three channels)
    assert torch.equal(out.shading[:, 0], out.shading[:, 1]) and torch.equal(out.shading[:, 0], out.shading[:, 2])


def test_trivial_is_input_as_encoded_albedo():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    out = create_method("trivial").decompose(images)
    # what the metrics see: the encoded albedo *is* the input; shading encodes to 4/5
    assert torch.allclose(out.encoded("albedo"), images, atol=1e-5)
    assert torch.allclose(out.shading, torch.ones_like(images))
    assert torch.allclose(out.encoded("shading"), torch.full_like(images, 0.8))
    # the re-render is *not* the input under Reinhard: it is reinhard(srgb_decode(image))
    assert torch.allclose(out.rerender, reinhard_encode(srgb_decode(images)), atol=1e-6)
    assert (out.rerender - images).abs().max() > 0.05
    # ... while under the sRGB display model it is the input exactly
    out_srgb = create_method("trivial", forward_model="srgb").decompose(images)
    assert torch.allclose(out_srgb.rerender, images, atol=1e-5)


# -- behaviour on a synthetic scene ------------------------------------------------------------
@pytest.mark.parametrize("name", ["retinex", "color-retinex"])
def test_retinex_separates_piecewise_reflectance_from_smooth_shading(name):
    image, albedo, shading = _scene(TWO_SQUARES)
    out = create_method(name).decompose(image)
    trivial = create_method("trivial").decompose(image)
    log_a = out.albedo[0].clamp_min(1e-8).log()
    means = {}
    for region, (rs, cs) in INSIDE.items():
        patch = log_a[:, rs, cs]
        means[region] = patch.mean(dim=(1, 2))
        # nearly constant inside each patch (the true shading varies by ~30 % there)
        assert patch.std(dim=(1, 2)).max() < 0.02, region
    # ... and the jumps between patches are recovered (true log ratios to the background)
    true_log = albedo.log()
    for region in ("square1", "square2"):
        rs, cs = INSIDE[region]
        want = true_log[:, rs, cs].mean(dim=(1, 2)) - true_log[:, 0:6, :].mean(dim=(1, 2))
        got = means[region] - means["background"]
        assert torch.allclose(got, want, atol=0.05), (region, got, want)
    # smooth shading that follows the truth up to scale
    assert corr(out.shading[0, 0], shading[0]) > 0.99
    assert si_mse(albedo, out.albedo[0]) < 0.1 * si_mse(albedo, trivial.albedo[0])
    assert si_mse(shading, out.shading[0]) < 0.1 * si_mse(shading, trivial.shading[0])
    # the global scale is anchored: 95th percentile of the max-channel albedo = 0.9
    assert np.percentile(out.albedo[0].max(dim=0).values.numpy(), 95) == pytest.approx(0.9, rel=1e-3)


def test_color_retinex_finds_colour_edge_that_gray_retinex_misses():
    image, albedo, shading = _scene(LOW_CONTRAST_COLOUR)
    gray = create_method("retinex").decompose(image)
    colour = create_method("color-retinex").decompose(image)

    def step_error(est):  # |estimated - true| log-shading jump across the square's top and bottom edges
        log_e, log_t = est[0].log(), shading[0].log()
        cols = slice(18, 46)
        return torch.cat([
            (log_e[r + 1, cols] - log_e[r, cols]) - (log_t[r + 1, cols] - log_t[r, cols]) for r in (15, 47)
        ]).abs()

    # gray Retinex calls the weak intensity edge shading: its 0.052 log step leaks into shading
    assert step_error(gray.shading[0]).min() > 0.04
    # colour Retinex calls it reflectance (its chromaticity changes): shading stays smooth
    # (it then also removes the true, small shading change at those pixels: error <= ~0.011)
    assert step_error(colour.shading[0]).max() < 0.02
    assert si_mse(shading, colour.shading[0]) < 0.2 * si_mse(shading, gray.shading[0])
    assert si_mse(albedo, colour.albedo[0]) < 0.2 * si_mse(albedo, gray.albedo[0])
    assert corr(colour.shading[0, 0], shading[0]) > 0.999


# -- configuration -----------------------------------------------------------------------------
def test_overrides_change_config_and_behaviour():
    m = create_method("retinex", gray_threshold=0.2)
    assert m.config.gray_threshold == 0.2 and m.config.colour is False
    assert create_method("color-retinex", chroma_threshold="0.5").config.chroma_threshold == 0.5  # --set strings
    assert create_method("retinex", colour=True).config.colour is True
    image, _, _ = _scene(TWO_SQUARES)
    linear_gray = reinhard_decode(image, 4.0).mean(dim=1)[0]
    # threshold 0: every gradient is reflectance -> constant shading
    all_refl = create_method("retinex", gray_threshold=0.0).decompose(image)
    assert float(all_refl.shading.std() / all_refl.shading.mean()) < 1e-4
    # huge threshold: every gradient is shading -> shading proportional to the gray image
    all_shad = create_method("retinex", gray_threshold=1e6).decompose(image)
    assert corr(all_shad.shading[0, 0], linear_gray) > 0.9999


@pytest.mark.parametrize("name", NAMES)
def test_unknown_override_is_clear_error(name):
    with pytest.raises(JoinbenchError, match="Unknown setting 'gray_treshold'"):
        create_method(name, gray_treshold=0.1)


def test_unknown_override_suggests_field():
    with pytest.raises(JoinbenchError, match="Did you mean gray_threshold"):
        create_method("retinex", gray_treshold=0.1)
    with pytest.raises(JoinbenchError, match="expected a float"):
        create_method("retinex", gray_threshold="high")
    with pytest.raises(JoinbenchError, match="anchor_value"):
        create_method("color-retinex", anchor_value=0)


# -- speed -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["retinex", "color-retinex"])
def test_fast_enough_for_materials(name):
    """100 images at 64 px must take well under a minute; we measure ~1-2 ms/image."""
    method = create_method(name)
    images = torch.rand(100, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    start = time.perf_counter()
    for batch in images.split(16):
        method.decompose(batch)
    assert time.perf_counter() - start < 5.0  # < 0.05 s/image even on a busy shared CPU
