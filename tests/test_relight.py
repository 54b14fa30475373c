"""``joinbench relight`` (joinbench.relight) with the full JoIN method on tiny CPU priors
and encoders exported into a temporary folder."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from joinbench.cli import app
from joinbench.errors import JoinbenchError
from joinbench.gan.bank import load_bank
from joinbench.imageio import write_png
from joinbench.registry import create_method
from joinbench.relight import relight

from .tiny_world import RES, export_tiny_priors

pytestmark = pytest.mark.usefixtures("tiny_env")

QUICK = ["steps=2", "pti_steps=2", "perceptual=none", "pti_perceptual=none", "bank_size=64", "mean_samples=256",
         "pti_disc_samples=2"]


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory):
    """Tiny random materials priors and encoders (albedo, shading, specular); noise strength
    left at 0, encoder heads at zero (they predict w_avg)."""
    return export_tiny_priors(tmp_path_factory.mktemp("bank"), seed=60, noise_strength=None, encoders=True)


def method(bank_dir, name="join"):
    kw = dict(s.split("=", 1) for s in QUICK)
    return create_method(name, priors_path=str(bank_dir), encoders_path=str(bank_dir), **kw)


def images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, RES, RES, generator=g) * 0.8 + 0.1 for _ in range(n)]


def test_own_shading_gives_back_the_rerender(bank_dir):
    """Relighting an image with its own lighting must reproduce its re-rendering."""
    img, _ = images()
    res = relight(method(bank_dir), img, shading_from=img)
    dec = res.decomposition
    assert torch.allclose(dec.shading[0], dec.shading[1]) and len(res.relit) == 1
    assert torch.allclose(res.relit[0], dec.rerender[0].cpu(), atol=1e-6)
    assert [t.shape for t in res.rows()[0]] == [(3, RES, RES)] * 4


def test_shading_from_another_image_keeps_the_albedo(bank_dir):
    a, b = images()
    res = relight(method(bank_dir), a, shading_from=b)
    dec = res.decomposition
    assert torch.equal(res.albedo, dec.albedo[0].cpu())
    assert torch.equal(res.shading[0], dec.shading[1].cpu()) and torch.equal(res.specular[0], dec.specular[1].cpu())
    assert torch.allclose(res.relit[0], dec.forward_model.render(dec.albedo[:1], dec.shading[1:], dec.specular[1:])[0])
    kept = relight(method(bank_dir), a, shading_from=b, keep_specular=True)
    assert torch.equal(kept.specular[0], kept.decomposition.specular[0].cpu())


def test_random_shading_comes_from_the_prior(bank_dir):
    img, _ = images()
    res = relight(method(bank_dir, "join-meaninit"), img, random_shading=2, seed=5)
    assert len(res.relit) == 2 and not torch.allclose(res.shading[0], res.shading[1])
    bank = load_bank("materials", components=("shading",), path=bank_dir)
    fm = res.forward_model
    expected = fm.decode("shading", bank["shading"].sample(2, 5, 0.7), clip=True)
    assert torch.allclose(torch.stack(res.shading), expected, atol=1e-6)
    with pytest.raises(JoinbenchError, match="not both"):
        relight(method(bank_dir), img, shading_from=img, random_shading=1)


def test_random_shading_follows_the_prior_domain_for_any_method(monkeypatch):
    """A face is relit with the faces shading prior even when the method is not JoIN."""
    import joinbench.gan.bank as bank_module
    from joinbench.relight import prior_samples

    asked = []

    def fake_bank(dataset, *args, **kwargs):
        asked.append(dataset)
        raise bank_module.PriorError("stop here")

    monkeypatch.setattr(bank_module, "load_bank", fake_bank)
    for prior, expected in (("faces", "faces"), (None, "materials")):
        with pytest.raises(JoinbenchError, match=f"samples the {expected} shading prior"):
            prior_samples(create_method("retinex"), 1, prior=prior)
    assert asked == ["faces", "materials"]


def test_cli_writes_the_strip(bank_dir, tmp_path):
    a, b = images()
    write_png(tmp_path / "a.png", a)
    write_png(tmp_path / "b.png", b)
    sets = [x for s in QUICK + [f"priors_path={bank_dir}", f"encoders_path={bank_dir}"] for x in ("--set", s)]
    out = tmp_path / "strip.png"
    result = CliRunner().invoke(app, ["relight", str(tmp_path / "a.png"), "--shading-from", str(tmp_path / "b.png"),
                                      "--out", str(out), "--device", "cpu", "--resolution", str(RES), *sets])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "pti" in result.output
    cell, pad, header = 64, 2, 26  # viz.grid_image: cells of max(64, resolution) px; "new shading" takes 2 lines
    assert Image.open(out).size == (4 * (cell + pad) + pad, header + cell + 2 * pad)
    out2 = tmp_path / "random.png"
    result = CliRunner().invoke(app, ["relight", "--dataset", "materials", "--index", "1", "--random-shading", "2",
                                      "--out", str(out2), "--device", "cpu", "--resolution", str(RES),
                                      "--method", "join-nopti", *sets])
    assert result.exit_code == 0, result.output
    assert Image.open(out2).size[1] == header + 2 * (cell + pad) + pad


@pytest.mark.parametrize("args, match", [
    (["--out", "x.png", "--random-shading", "1"], "Name the image to relight"),
    (["img.png", "--out", "x.png"], "exactly one new lighting"),
    (["img.png", "--out", "x.png", "--random-shading", "2", "--shading-from", "b.png"], "exactly one new lighting"),
    (["img.png", "--out", "x.jpg", "--random-shading", "2"], "give a .png file name"),
    (["img.png", "--out", "x.png", "--shading-index", "2"], "--shading-index picks a test image"),
    (["img.png", "--out", "x.png", "--random-shading", "1", "--index", "3"], "--index picks a test image"),
    (["img.png", "--out", "x.png", "--random-shading", "1", "--prior", "face"], "Did you mean 'faces'"),
    (["--dataset", "materials", "--index", "100000", "--out", "x.png", "--random-shading", "1", "--resolution", "16"],
     "out of range"),
])
def test_cli_errors_are_one_line(args, match, tmp_path):
    result = CliRunner().invoke(app, ["relight", *args])
    assert isinstance(result.exception, JoinbenchError), result.output
    assert match in str(result.exception) and "\n" not in str(result.exception)


def test_missing_image_file_is_an_image_error(tmp_path):
    result = CliRunner().invoke(app, ["relight", str(tmp_path / "none.png"), "--random-shading", "1",
                                      "--out", str(tmp_path / "x.png")])
    assert isinstance(result.exception, JoinbenchError) and "no such file" in str(result.exception)
