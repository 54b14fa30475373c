"""Forward models: encodings round-trip, composition by hand, gradients flow."""
import math

import pytest
import torch

from joinbench.forward import reinhard_decode, reinhard_encode, srgb_decode, srgb_encode
from joinbench.registry import create_forward_model

MODELS = ["reinhard", "srgb", "reinhard-nospecular"]


@pytest.mark.parametrize("name", MODELS)
def test_encode_decode_round_trip(name):
    fm = create_forward_model(name)
    lin = torch.linspace(0.0, 1.0, 1001)
    for comp in fm.components:
        hi = 1.0 if comp == "albedo" else 20.0  # shading/specular are HDR
        x = lin * hi
        back = fm.decode(comp, fm.encode(comp, x))
        torch.testing.assert_close(back, x, atol=1e-5, rtol=1e-4)
        y = torch.linspace(0.0, 0.99, 500)
        torch.testing.assert_close(fm.encode(comp, fm.decode(comp, y)), y, atol=1e-5, rtol=1e-5)


def test_transfer_functions_known_values():
    assert srgb_encode(torch.tensor(0.0031308)).item() == pytest.approx(0.04045, abs=1e-5)
    assert srgb_encode(torch.tensor(1.0)).item() == pytest.approx(1.0, abs=1e-6)
    assert srgb_decode(torch.tensor(0.5)).item() == pytest.approx(((0.5 + 0.055) / 1.055) ** 2.4)
    assert reinhard_encode(torch.tensor(1.0), 4.0).item() == pytest.approx(0.8)
    assert reinhard_decode(torch.tensor(0.8), 4.0).item() == pytest.approx(1.0, rel=1e-5)


def test_composition_matches_hand_computed_pixel():
    a, s, p = torch.tensor([0.5, 0.2, 0.1]), torch.tensor([0.8, 0.8, 0.6]), torch.tensor([0.05, 0.0, 0.1])
    raw = [0.5 * 0.8 + 0.05, 0.2 * 0.8, 0.1 * 0.6 + 0.1]
    rh = create_forward_model("reinhard")
    torch.testing.assert_close(rh.render(a, s, p), torch.tensor([4 * r / (1 + 4 * r) for r in raw]))
    sr = create_forward_model("srgb")
    expect = [1.055 * r ** (1 / 2.4) - 0.055 for r in raw]
    torch.testing.assert_close(sr.render(a, s, p), torch.tensor(expect))
    ns = create_forward_model("reinhard-nospecular")
    assert ns.components == ("albedo", "shading")
    torch.testing.assert_close(ns.render(a, s, p), torch.tensor([4 * x / (1 + 4 * x) for x in (0.4, 0.16, 0.06)]))
    # display output is clipped to [0, 1] whatever the HDR input
    assert sr.render(torch.ones(3) * 5, torch.ones(3)).max().item() == 1.0


def test_shading_scale_is_configurable():
    fm = create_forward_model("reinhard", shading_scale=2.0)
    assert fm.encode("shading", torch.tensor(1.0)).item() == pytest.approx(2 / 3)
    assert fm.encode("specular", torch.tensor(1.0)).item() == pytest.approx(0.8)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_flow_through_decode_and_compose(name):
    fm = create_forward_model(name)
    enc = {c: torch.full((1, 3, 4, 4), 0.4, requires_grad=True) for c in fm.components}
    image = fm.render_encoded(enc)
    image.mean().backward()
    for c, t in enc.items():
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, c


def test_decode_clip_keeps_values_finite():
    fm = create_forward_model("reinhard")
    y = torch.tensor([-0.5, 0.0, 1.0, 1.5])
    assert torch.isfinite(fm.decode("shading", y)).all()
    clipped = fm.decode("shading", y, clip=True)
    assert clipped.min().item() == pytest.approx(0.01 / (4 * 0.99)) and math.isfinite(clipped.max().item())


def test_unknown_component_and_tonemap():
    fm = create_forward_model("reinhard")
    with pytest.raises(ValueError):
        fm.encode("normals", torch.zeros(1))
