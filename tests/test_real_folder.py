"""Image I/O, real-photo datasets (scikit-image), folder: and mit: loaders."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from joinbench import create_dataset, create_forward_model
from joinbench.errors import DatasetError, ImageError, JoinbenchError, UnknownNameError
from joinbench.imageio import (
    encode_png, image_info, read_image, read_npz, to_resolution, write_npz, write_png,
)

FM = create_forward_model("reinhard")
RNG = np.random.default_rng(1234)


def one_line_error(exc_info, cls, *needles):
    """The raised error is a one-line ``cls`` whose message contains every needle."""
    err = exc_info.value
    assert isinstance(err, cls) and isinstance(err, JoinbenchError)
    msg = str(err)
    assert "\n" not in msg and msg.strip() == msg
    for n in needles:
        assert str(n) in msg, (n, msg)
    return msg


# -- imageio -----------------------------------------------------------------------------
def test_read_modes(tmp_path):
    rgb = RNG.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    t, info = read_image(tmp_path / "rgb.png")
    assert t.dtype == torch.float32 and t.shape == (3, 20, 24)
    assert torch.allclose(t, torch.from_numpy(rgb).permute(2, 0, 1) / 255.0)
    assert info["bit_depth"] == 8 and info["mode"] == "RGB" and info["size"] == (24, 20) and info["alpha"] is None

    # 16-bit gray (Pillow mode I;16) keeps its precision and is replicated to RGB
    g16 = RNG.integers(0, 65536, (18, 17), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    t, info = read_image(tmp_path / "g16.png")
    assert info["bit_depth"] == 16 and info["mode"].startswith("I;16") and t.shape == (3, 18, 17)
    assert torch.equal(t[0], t[2])
    assert torch.allclose(t[0].double(), torch.from_numpy(g16.astype(np.float64) / 65535), atol=1e-7)
    assert read_image(tmp_path / "g16.png", kind="mask")[0].shape == (1, 18, 17)

    # 16-bit RGB (Pillow would truncate to 8 bits), every PNG row filter
    c16 = RNG.integers(0, 65536, (19, 21, 3), dtype=np.uint16)
    (tmp_path / "c16.png").write_bytes(encode_png(c16, 16, filters=np.arange(19) % 5))
    t, info = read_image(tmp_path / "c16.png")
    assert info["bit_depth"] == 16
    assert torch.allclose(t.double(), torch.from_numpy(c16.transpose(2, 0, 1) / 65535.0), atol=1e-7)

    # RGBA: colour kept as stored, alpha returned; as a mask: colour * alpha
    rgba = RNG.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:8, :, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    t, info = read_image(tmp_path / "rgba.png")
    assert t.shape == (3, 16, 16) and torch.allclose(t, torch.from_numpy(rgba[..., :3]).permute(2, 0, 1) / 255.0)
    assert info["alpha"].shape == (1, 16, 16) and info["alpha"][0, :8].max() == 0 and info["alpha"][0, 8:].min() == 1
    m, _ = read_image(tmp_path / "rgba.png", kind="mask")
    assert m.shape == (1, 16, 16) and m[0, :8].max() == 0

    # palette (with and without transparency), gray+alpha, bilevel, CMYK, float TIFF
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "pal.png")
    t, info = read_image(tmp_path / "pal.png")
    assert info["mode"] == "P" and t.shape == (3, 20, 24)
    assert torch.allclose(t, torch.from_numpy(np.array(pal.convert("RGB"))).permute(2, 0, 1) / 255.0)
    pal.save(tmp_path / "palt.png", transparency=0)
    assert read_image(tmp_path / "palt.png")[1]["alpha"] is not None
    Image.fromarray(rgb[..., :2].copy(), "LA").save(tmp_path / "la.png")
    t, info = read_image(tmp_path / "la.png")
    assert t.shape == (3, 20, 24) and info["alpha"] is not None and torch.equal(t[0], t[1])
    Image.fromarray(rgb[..., 0] > 128).save(tmp_path / "bw.png")
    assert set(read_image(tmp_path / "bw.png")[0].unique().tolist()) <= {0.0, 1.0}
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    t, info = read_image(tmp_path / "cmyk.jpg")
    assert info["mode"] == "CMYK" and t.shape == (3, 20, 24) and 0 <= t.min() and t.max() <= 1
    f = RNG.random((16, 20), dtype=np.float32)
    Image.fromarray(f, "F").save(tmp_path / "f.tif")
    t, info = read_image(tmp_path / "f.tif")
    assert info["bit_depth"] == 32 and torch.allclose(t[0], torch.from_numpy(f))


def test_exif_orientation(tmp_path):
    arr = RNG.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.png"
        Image.fromarray(arr).save(path, exif=exif)
        t, info = read_image(path)
        want = np.asarray(ImageOps.exif_transpose(Image.open(path)))
        assert info["orientation"] == orientation and info["size"] == (want.shape[1], want.shape[0])
        assert torch.allclose(t, torch.from_numpy(want.copy()).permute(2, 0, 1) / 255.0)


def test_bad_images(tmp_path):
    with pytest.raises(ImageError) as e:
        read_image(tmp_path / "nope.png")
    one_line_error(e, ImageError, "nope.png", "no such file")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError) as e:
        read_image(tmp_path / "empty.png")
    one_line_error(e, ImageError, "empty.png", "0 bytes")
    (tmp_path / "garbage.png").write_bytes(b"this is not a png at all" * 10)
    with pytest.raises(ImageError) as e:
        read_image(tmp_path / "garbage.png")
    one_line_error(e, ImageError, "garbage.png", "not a readable image")
    good = encode_png(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8), 8, "none")
    (tmp_path / "trunc.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageError) as e:
        read_image(tmp_path / "trunc.png")
    one_line_error(e, ImageError, "trunc.png")
    Image.new("RGB", (10, 40)).save(tmp_path / "tiny.png")
    with pytest.raises(ImageError) as e:
        image_info(tmp_path / "tiny.png")
    one_line_error(e, ImageError, "tiny.png", "10x40", "too small", "16 px")
    Image.new("L", (9000, 10)).save(tmp_path / "wide.png")
    with pytest.raises(ImageError) as e:
        read_image(tmp_path / "wide.png")
    one_line_error(e, ImageError, "wide.png", "9000x10", "8192", "downscale")
    # a header-only 7000x7000 PNG (49 MP, no pixel data): refused from the header alone
    ihdr = struct.pack(">IIBBBBB", 7000, 7000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    with pytest.raises(ImageError) as e:
        read_image(tmp_path / "huge.png")
    one_line_error(e, ImageError, "huge.png", "40 MP", "downscale")


def test_to_resolution_and_writers(tmp_path):
    img = torch.zeros(3, 32, 48)
    img[:, :, 8:40] = 1.0  # exactly the centre square
    out = to_resolution(img, 16)
    assert out.shape == (3, 16, 16) and torch.allclose(out, torch.ones(3, 16, 16))
    assert to_resolution(torch.rand(3, 20, 20), 64).shape == (3, 64, 64)  # enlarging
    mask = (torch.rand(1, 50, 70) > 0.5).float()
    m = to_resolution(mask, 16, kind="mask")
    assert m.shape == (1, 16, 16) and set(m.unique().tolist()) <= {0.0, 1.0}
    x = torch.rand(3, 20, 30)
    write_png(tmp_path / "x16.png", x, bits=16)
    write_png(tmp_path / "x8.png", x, bits=8)
    assert (read_image(tmp_path / "x16.png")[0] - x).abs().max() <= 0.5 / 65535 + 1e-7
    assert (read_image(tmp_path / "x8.png")[0] - x).abs().max() <= 0.5 / 255 + 1e-7
    write_npz(tmp_path / "l.npz", albedo=x, shading=x * 3)
    arrays = read_npz(tmp_path / "l.npz")
    assert torch.equal(arrays["shading"], x * 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.npz", "x16.png", "x8.png"]  # no temp files left


# -- real photos ---------------------------------------------------------------------------
def test_real_datasets():
    for name, n, first in (("real-materials", 21, "brick-tl"), ("real-faces", 3, "astronaut-face")):
        ds = create_dataset(name, resolution=32)
        assert len(ds) == n and ds.has_ground_truth is False and ds.components == ()
        assert ds.forward_model.name == "reinhard" and ds.info()["has_ground_truth"] is False
        ids = [ds[i].id for i in range(n)]
        assert ids[0] == first and len(set(ids)) == n
        for i in range(n):
            s = ds[i]
            assert s.image.shape == (3, 32, 32) and s.image.dtype == torch.float32
            assert 0 <= s.image.min() and s.image.max() <= 1 and s.image.std() > 0.01
            assert not s.has_ground_truth and s.mask is None
            assert s.meta["colour_space"] == "sRGB display" and s.meta["resolution"] == 32
            assert s.meta["source"].startswith("skimage.data.")
            assert ("CC0" in s.meta["licence"]) or ("public domain" in s.meta["licence"])
            assert set(s.meta["crop_box"]) == {"top", "left", "height", "width"}


def test_real_licences_are_what_skimage_states():
    import skimage.data

    from joinbench.datasets.real import FACE_CROPS, MATERIAL_CROPS, SOURCES

    for src in SOURCES.values():
        doc = " ".join((getattr(skimage.data, src.function).__doc__ or "").split())
        assert " ".join(src.licence.split()) in doc, src.function
    for crop in (*MATERIAL_CROPS, *FACE_CROPS):  # every crop lies inside its photo
        h, w = {"brick": (512, 512), "grass": (512, 512), "gravel": (512, 512), "coffee": (400, 600),
                "chelsea": (300, 451), "astronaut": (512, 512), "camera": (512, 512)}[crop.photo]
        assert crop.top + crop.size <= h and crop.left + crop.size <= w


# -- folder: -----------------------------------------------------------------------------
def _linear_layers(h, w):
    g = torch.Generator().manual_seed(0)
    albedo = torch.rand(3, h, w, generator=g) * 0.9 + 0.05
    shading = (torch.rand(1, h, w, generator=g) * 2.0 + 0.1).expand(3, -1, -1).contiguous()
    specular = torch.rand(3, h, w, generator=g) * 0.3
    return albedo, shading, specular


def test_folder_images_and_ground_truth(tmp_path):
    root = tmp_path / "photos"
    for d in ("albedo", "shading", "specular", "mask"):
        (root / d).mkdir(parents=True)
    h = w = 32
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "a_rgb.jpg", quality=95)
    Image.fromarray(RNG.integers(0, 65536, (h, w), dtype=np.uint16)).save(root / "b_gray16.png")
    rgba = RNG.integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(root / "c_rgba.png")
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert("P").save(root / "d_pal.png")
    (root / "notes.txt").write_text("ignored")
    layers = {}
    for i, stem in enumerate(["a_rgb", "b_gray16", "c_rgba", "d_pal"]):
        albedo, shading, specular = _linear_layers(h, w)
        layers[stem] = (albedo, shading, specular)
        write_png(root / "albedo" / f"{stem}.png", FM.encode("albedo", albedo), bits=8)
        write_png(root / "shading" / f"{stem}.png", FM.encode("shading", shading[:1]), bits=16)  # gray 16-bit
        if i % 2:  # npz ground truth under the component's name, or as arr_0
            write_npz(root / "specular" / f"{stem}.npz", specular=specular, albedo=albedo * 0)
        else:
            np.savez(root / "specular" / f"{stem}.npz", specular.permute(1, 2, 0).numpy())  # (H, W, 3) as arr_0
        mask = np.zeros((h, w), np.uint8)
        mask[4:28, 4:28] = 255
        Image.fromarray(mask).save(root / "mask" / f"{stem}.png")

    ds = create_dataset(f"folder:{root}", resolution=32)
    assert len(ds) == 4 and ds.has_ground_truth and ds.components == ("albedo", "shading", "specular")
    assert [ds[i].id for i in range(4)] == ["a_rgb", "b_gray16", "c_rgba", "d_pal"]
    for i in range(4):
        s = ds[i]
        albedo, shading, specular = layers[s.id]
        assert s.image.shape == (3, 32, 32) and 0 <= s.image.min() and s.image.max() <= 1
        # 8-bit encoded albedo decodes to the linear truth within 8-bit quantisation (in encoded space)
        assert (FM.encode("albedo", s.albedo) - FM.encode("albedo", albedo)).abs().max() <= 0.5 / 255 + 1e-5
        assert (FM.encode("shading", s.shading) - FM.encode("shading", shading)).abs().max() <= 0.5 / 65535 + 1e-5
        assert torch.allclose(s.shading[0], s.shading[2]) and torch.allclose(s.specular, specular)
        assert s.mask.shape == (1, 32, 32) and s.mask.sum() == 24 * 24
        assert s.meta["ground_truth_files"]["albedo"].endswith(f"{s.id}.png")
    assert ds[1].meta["bit_depth"] == 16 and ds[3].meta["mode"] == "P"
    gray = ds[1].image
    assert torch.equal(gray[0], gray[1])


def test_folder_crop_alpha_mask_and_resize(tmp_path):
    root = tmp_path / "f"
    root.mkdir()
    img = np.zeros((40, 60, 4), np.uint8)
    img[..., 0] = 200
    img[..., 3] = 255
    img[:, :30, 3] = 0  # left half transparent
    Image.fromarray(img).save(root / "x.png")
    ds = create_dataset(f"folder:{root}", resolution=16)
    s = ds[0]
    assert not ds.has_ground_truth and ds.components == () and s.albedo is None
    assert s.meta["crop_box"] == {"top": 0, "left": 10, "height": 40, "width": 40}
    assert s.mask is not None and s.meta["mask_from"] == "image alpha"
    assert s.mask[0, :, :8].sum() == 0 and s.mask[0, :, 8:].min() == 1  # crop 10..50: alpha edge at 30 -> 20/40
    assert torch.allclose(s.image[0], torch.full((16, 16), 200 / 255))


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError) as e:
        create_dataset(f"folder:{tmp_path / 'missing'}")
    one_line_error(e, DatasetError, "missing", "does not exist")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DatasetError) as e:
        create_dataset(f"folder:{tmp_path / 'file.png'}")
    one_line_error(e, DatasetError, "not a folder")
    with pytest.raises(DatasetError) as e:
        create_dataset("folder:")
    one_line_error(e, DatasetError, "needs a path")
    empty = tmp_path / "empty"
    (empty / "albedo").mkdir(parents=True)
    with pytest.raises(DatasetError) as e:
        create_dataset(f"folder:{empty}")
    one_line_error(e, DatasetError, str(empty), "no images", "albedo/")

    def folder_with(name, writer):
        d = tmp_path / name
        d.mkdir()
        Image.new("RGB", (24, 24), (10, 20, 30)).save(d / "ok.png")
        writer(d)
        return d

    cases = [
        ("garbage", lambda d: (d / "bad.png").write_bytes(b"\x00garbage" * 20), ImageError, ["bad.png", "not a readable image"]),
        ("zero", lambda d: (d / "zero.jpg").write_bytes(b""), ImageError, ["zero.jpg", "empty"]),
        ("tiny", lambda d: Image.new("RGB", (12, 12)).save(d / "tiny.png"), ImageError, ["tiny.png", "too small"]),
        ("huge", lambda d: Image.new("L", (9000, 10)).save(d / "huge.png"), ImageError, ["huge.png", "8192"]),
    ]
    for name, writer, cls, needles in cases:
        with pytest.raises(cls) as e:
            create_dataset(f"folder:{folder_with(name, writer)}")
        one_line_error(e, cls, *needles)

    def bad_gt_size(d):
        (d / "albedo").mkdir()
        Image.new("RGB", (20, 24)).save(d / "albedo" / "ok.png")

    with pytest.raises(DatasetError) as e:
        create_dataset(f"folder:{folder_with('gtsize', bad_gt_size)}")
    one_line_error(e, DatasetError, "albedo", "20x24", "24x24", "ok.png")

    def missing_gt(d):
        Image.new("RGB", (24, 24)).save(d / "two.png")
        (d / "shading").mkdir()
        Image.new("L", (24, 24)).save(d / "shading" / "ok.png")

    with pytest.raises(DatasetError) as e:
        create_dataset(f"folder:{folder_with('gtmissing', missing_gt)}")
    one_line_error(e, DatasetError, "shading", "1 of 2", "two", "remove the shading/ folder")

    with pytest.raises(UnknownNameError) as e:
        create_dataset("fodler:/x")
    one_line_error(e, UnknownNameError, "Did you mean", "folder:PATH")


# -- mit: --------------------------------------------------------------------------------
def test_mit_layout(tmp_path):
    root = tmp_path / "MIT" / "data"
    truth = {}
    for k, obj in enumerate(("apple", "box")):
        d = root / obj
        d.mkdir(parents=True)
        h, w = 24, 32
        albedo, shading, specular = _linear_layers(h, w)
        albedo, shading = albedo * 0.9, shading / 2.2  # keep within the 16-bit [0, 1] range
        original = (albedo * shading).clamp(0, 1)
        q = lambda t: np.rint(t.numpy().transpose(1, 2, 0) * 65535).astype(np.uint16)
        (d / "original.png").write_bytes(encode_png(q(original), 16))
        (d / "reflectance.png").write_bytes(encode_png(q(albedo), 16))
        Image.fromarray(q(shading[:1])[..., 0]).save(d / "shading.png")  # gray 16-bit
        mask = np.zeros((h, w), np.uint16)
        mask[2:22, 6:26] = 65535
        Image.fromarray(mask).save(d / "mask.png")
        truth[obj] = (original, albedo, shading)
    (root / "README").mkdir()  # a folder without original.png is not an object

    ds = create_dataset(f"mit:{root}", resolution=16)
    assert len(ds) == 2 and ds.components == ("albedo", "shading") and ds.has_ground_truth
    for i, obj in enumerate(("apple", "box")):
        s = ds[i]
        original, albedo, shading = truth[obj]
        assert s.id == obj and s.specular is None
        assert torch.allclose(s.image, to_resolution(FM.display(original), 16), atol=1e-4)
        assert torch.allclose(s.albedo, to_resolution(albedo, 16), atol=1e-4)
        assert torch.allclose(s.shading, to_resolution(shading, 16), atol=1e-4) and torch.equal(s.shading[0], s.shading[1])
        assert s.mask.shape == (1, 16, 16) and set(s.mask.unique().tolist()) == {0.0, 1.0}
    single = create_dataset(f"mit:{root / 'box'}", resolution=16)  # one object folder
    assert len(single) == 1 and single[0].id == "box"

    (root / "box" / "mask.png").unlink()
    with pytest.raises(DatasetError) as e:
        create_dataset(f"mit:{root}", resolution=16)
    one_line_error(e, DatasetError, "mask", "box", "mask.png")
    with pytest.raises(DatasetError) as e:
        create_dataset(f"mit:{tmp_path}")
    one_line_error(e, DatasetError, "no MIT objects", "original.png")
