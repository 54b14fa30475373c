"""Image files in and out: every image joinbench reads or writes goes through here.

``read_image`` turns any PNG / JPEG / TIFF / BMP / WebP (anything Pillow opens) into a
float32 ``(C, H, W)`` tensor in [0, 1] and says what it found (size, mode, bit depth,
alpha). It handles, explicitly:

* 8-bit and 16-bit files. 16-bit values are divided by 65535 and keep their precision:
  Pillow reads 16-bit *gray* PNGs itself (mode ``I;16``) but truncates 16-bit *colour*
  PNGs (RGB / RGBA / gray+alpha) to 8 bits, so those are decoded here (``_decode_png16``);
  16-bit colour TIFFs are read with ``tifffile`` (a scikit-image dependency).
* grayscale (``1``, ``L``, ``I;16``, ``I``, ``F``, ``LA``): replicated to RGB for
  ``kind="image"``, kept as one channel for ``kind="mask"``.
* alpha (``RGBA``, ``LA``, ``PA``, palette transparency): the colour is kept as stored
  (alpha is *dropped*, not composited onto a background) and the alpha channel is returned
  as ``info["alpha"]`` (1, H, W), usable as a mask. For ``kind="mask"`` the mask value is
  the brightest colour channel times alpha.
* palette (``P``) -> RGB(A); ``CMYK`` / ``YCbCr`` / ``HSV`` -> RGB (Pillow's conversion,
  no ICC colour management); float ``F`` accepted when its values lie in [0, 1].
* EXIF orientation is applied, so the tensor is upright as a viewer shows it.

Every problem is an :class:`~joinbench.errors.ImageError` with one line naming the file,
the problem and the fix (missing, empty, not an image, corrupt / truncated, smaller than
16 px or larger than 8192 px a side or 40 megapixels, unsupported mode): never a raw
Pillow traceback.

``to_resolution`` centre-crops to a square and resizes (box-filter "area" averaging when
shrinking, bilinear when enlarging; masks are thresholded at 0.5). ``write_png`` writes 8-
or 16-bit PNGs atomically; ``read_npz`` / ``write_npz`` store lossless linear layers.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .env import write_atomic
from .errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
MIN_SIDE = 16
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000
KINDS = ("image", "mask")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DOWNSCALE_HINT = (
    "downscale it first, e.g. with Pillow: im = Image.open(IN); im.thumbnail((2048, 2048)); im.save(OUT) "
    "(joinbench evaluates at 16-512 px anyway)"
)


# -- reading -------------------------------------------------------------------------------
def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _check_size(path: Path, width: int, height: int) -> None:
    if max(width, height) > MAX_SIDE:
        raise ImageError(
            f"{path}: image is {width}x{height} px, larger than the {MAX_SIDE} px per side limit; {_DOWNSCALE_HINT}."
        )
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{path}: image is {width}x{height} px ({width * height / 1e6:.1f} MP), larger than the "
            f"{MAX_PIXELS / 1e6:g} MP limit; {_DOWNSCALE_HINT}."
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            f"{path}: image is {width}x{height} px, too small (each side must be at least {MIN_SIDE} px); "
            f"use a larger image or remove this file."
        )


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageError(f"{path}: no such file; check the path.")
    if not path.is_file():
        raise ImageError(f"{path}: is not a file (a folder?); pass an image file.")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes); re-export or re-download it, or remove it.")


def _open(path: Path):
    """Open lazily with Pillow (header only), mapping every failure to ImageError."""
    from PIL import Image, UnidentifiedImageError

    _check_file(path)
    header = _png_header(path)
    if header is not None:  # refuse huge PNGs from the header, before Pillow's own bomb check
        _check_size(path, header[0], header[1])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image is too large to open safely ({_short(exc)}); {_DOWNSCALE_HINT}.") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{path}: not a readable image (unknown or corrupt format); supported are PNG, JPEG, TIFF, BMP, "
            f"WebP: re-save it in one of those or remove it."
        ) from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise ImageError(f"{path}: cannot be read as an image, damaged or truncated ({_short(exc)}); re-export it or remove it.") from None


def _png_header(path: Path) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, colour type, interlace) of a PNG, or None if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height, depth, ctype, _comp, _filt, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return width, height, depth, ctype, interlace


def _orientation(img) -> int:
    try:
        value = int(img.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block must not make the image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W, ...) array, as ImageOps.exif_transpose."""
    t = lambda a: np.swapaxes(a, 0, 1)
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],          # mirror left-right
        3: lambda a: a[::-1, ::-1],       # rotate 180
        4: lambda a: a[::-1],             # mirror top-bottom
        5: lambda a: t(a),                # transpose
        6: lambda a: np.rot90(a, -1),     # rotate 90 clockwise
        7: lambda a: t(a)[::-1, ::-1],    # transverse
        8: lambda a: np.rot90(a, 1),      # rotate 90 counter-clockwise
    }
    return np.ascontiguousarray(ops[orientation](arr))


def _header_facts(path: Path, img) -> tuple[int, int, int, str, str]:
    """(stored width, height, EXIF orientation, mode, format) of an open image whose size is acceptable."""
    w, h = img.size
    _check_size(path, w, h)
    return w, h, _orientation(img), img.mode, img.format


def image_info(path: str | os.PathLike) -> dict[str, Any]:
    """Check that ``path`` is an image of acceptable size and return its header facts
    (``size`` (W, H) as displayed, i.e. after EXIF orientation; ``stored_size``; ``mode``;
    ``format``; ``orientation``) without decoding the pixels."""
    path = Path(path)
    with _open(path) as img:
        w, h, orientation, mode, fmt = _header_facts(path, img)
    size = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    return {"path": str(path), "size": size, "stored_size": (w, h), "mode": mode, "format": fmt,
            "orientation": orientation}


def read_image(path: str | os.PathLike, *, kind: str = "image") -> tuple[Tensor, dict[str, Any]]:
    """Read an image file as float32 ``(C, H, W)`` in [0, 1].

    kind: ``"image"`` -> 3 channels (gray replicated); ``"mask"`` -> 1 channel (brightest
    colour channel, times alpha where there is one; not thresholded).

    Returns the tensor and ``info``: ``path``, ``format``, ``mode`` (Pillow's, of the file),
    ``bit_depth`` (per channel: 1, 8, 16 or 32), ``size`` (W, H) of the returned tensor,
    ``stored_size`` (W, H) in the file, ``orientation`` (EXIF, 1 = none), ``frames``,
    ``alpha`` ((1, H, W) tensor, or None when the file has no alpha).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(path)
    with _open(path) as img:
        w, h, orientation, mode, fmt = _header_facts(path, img)
        frames = int(getattr(img, "n_frames", 1) or 1)
        try:
            colour, alpha, depth = _decode(path, img)
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError, struct.error, EOFError, zlib.error, MemoryError) as exc:
            raise ImageError(f"{path}: image data is corrupt or truncated ({_short(exc)}); re-export it or remove it.") from None

    if colour.shape[:2] != (h, w):
        raise ImageError(f"{path}: decoded size {colour.shape[1]}x{colour.shape[0]} differs from the header's {w}x{h}; the file is damaged: re-export it.")
    colour = _apply_orientation(colour, orientation)
    if alpha is not None:
        alpha = _apply_orientation(alpha, orientation)
    if not np.isfinite(colour).all():
        raise ImageError(f"{path}: float image holds NaN or infinite values; re-save it with finite values in [0, 1].")

    if colour.ndim == 2:
        colour = colour[:, :, None]
    if kind == "image":
        if colour.shape[2] == 1:
            colour = np.repeat(colour, 3, axis=2)
        out = colour
    else:
        out = colour.max(axis=2, keepdims=True)
        if alpha is not None:
            out = out * alpha[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32))
    info = {
        "path": str(path), "format": fmt, "mode": mode, "bit_depth": depth,
        "size": (tensor.shape[2], tensor.shape[1]), "stored_size": (w, h),
        "orientation": orientation, "frames": frames,
        "alpha": None if alpha is None else torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32))[None],
    }
    return tensor, info


def _decode(path: Path, img) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Pixels of an open Pillow image -> (colour (H, W) or (H, W, 3) float32, alpha or None, bit depth)."""
    # 16-bit colour PNGs / TIFFs: Pillow would keep only 8 bits per channel.
    if img.format == "PNG":
        header = _png_header(path)
        if header is not None and header[2] == 16 and header[3] in (2, 4, 6):
            arr = _decode_png16(path, header)
            return _split_alpha(arr.astype(np.float32) / 65535.0) + (16,)
    if img.format == "TIFF" and img.mode in ("RGB", "RGBA", "RGBX") and _tiff_bits(img) > 8:
        arr = _read_tiff(path)
        return arr

    mode = img.mode
    img.load()
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0, None, 1
    if mode == "L":
        return np.asarray(img, dtype=np.float32) / 255.0, None, 8
    if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in img.info):
        target = "LA" if mode in ("LA", "La") else "RGBA"
        arr = np.asarray(img.convert(target) if mode != target else img, dtype=np.float32) / 255.0
        return _split_alpha(arr) + (8,)
    if mode in ("RGB", "RGBX", "P", "CMYK", "YCbCr", "HSV"):
        return np.asarray(img.convert("RGB") if mode != "RGB" else img, dtype=np.float32) / 255.0, None, 8
    if mode.startswith("I;16"):
        arr = np.asarray(img)
        if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
            raise ImageError(f"{path}: signed 16-bit image with negative values; save it as an unsigned 8- or 16-bit PNG.")
        return arr.astype(np.float32) / 65535.0, None, 16
    if mode == "I":
        arr = np.asarray(img).astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageError(
                f"{path}: 32-bit integer image with values {arr.min()}..{arr.max()} outside 0..65535; "
                f"save it as an 8- or 16-bit PNG."
            )
        return arr.astype(np.float32) / 65535.0, None, 16
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        finite = arr[np.isfinite(arr)]
        if finite.size and (finite.min() < -1e-3 or finite.max() > 1 + 1e-3):
            raise ImageError(
                f"{path}: float image with values {finite.min():.4g}..{finite.max():.4g} outside [0, 1]; "
                f"rescale it to [0, 1], or store linear data as .npz."
            )
        return np.clip(arr, 0.0, 1.0), None, 32
    raise ImageError(
        f"{path}: unsupported image mode {mode!r}; re-save it as an 8- or 16-bit RGB or grayscale PNG."
    )


def _split_alpha(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, C) with alpha last -> (colour, alpha); gray+alpha gives (H, W) colour."""
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        colour = arr[:, :, :-1]
        return (colour[:, :, 0] if colour.shape[2] == 1 else colour), arr[:, :, -1]
    return arr, None


def _tiff_bits(img) -> int:
    try:
        bits = img.tag_v2.get(258, (8,))
        return int(max(bits if isinstance(bits, tuple) else (bits,)))
    except Exception:
        return 8


def _read_tiff(path: Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile comes with scikit-image
        raise ImageError(f"{path}: 16-bit colour TIFF needs the tifffile package; pip install tifffile, or save it as PNG.") from None
    arr = np.asarray(tifffile.imread(path))
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"{path}: unexpected TIFF layout {arr.shape}; save it as an RGB PNG.")
    if arr.dtype.kind == "u":
        depth = arr.dtype.itemsize * 8
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    elif arr.dtype.kind == "f":
        depth = 32
        arr = arr.astype(np.float32)
        if arr.size and (arr.min() < -1e-3 or arr.max() > 1 + 1e-3):
            raise ImageError(f"{path}: float TIFF with values outside [0, 1]; rescale it, or store linear data as .npz.")
        arr = np.clip(arr, 0.0, 1.0)
    else:
        raise ImageError(f"{path}: unsupported TIFF sample type {arr.dtype}; save it as a 16-bit PNG.")
    return _split_alpha(arr) + (depth,)


_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _decode_png16(path: Path, header: tuple[int, int, int, int, int]) -> np.ndarray:
    """Decode a non-interlaced 16-bit PNG to (H, W, C) uint16 (Pillow truncates colour ones)."""
    width, height, depth, ctype, interlace = header
    if interlace:
        raise ImageError(
            f"{path}: Adam7-interlaced 16-bit colour PNG is not supported; re-save it without interlacing "
            f"(e.g. with ImageMagick: convert IN -interlace none OUT.png)."
        )
    channels = _PNG_CHANNELS[ctype]
    data = Path(path).read_bytes()
    pos, idat = 8, []
    while pos + 8 <= len(data):
        length, tag = struct.unpack(">I4s", data[pos:pos + 8])
        if tag == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        elif tag == b"IEND":
            break
        pos += 12 + length
    raw = zlib.decompress(b"".join(idat))
    bpp = channels * 2
    stride = width * bpp
    if len(raw) < height * (stride + 1):
        raise ImageError(f"{path}: PNG data is truncated ({len(raw)} of {height * (stride + 1)} bytes); re-export it.")
    rows = np.frombuffer(raw, np.uint8, count=height * (stride + 1)).reshape(height, stride + 1)
    filters = rows[:, 0]
    if filters.max(initial=0) > 4:
        raise ImageError(f"{path}: PNG uses an unknown row filter {int(filters.max())}; the file is damaged: re-export it.")
    out = _unfilter(rows[:, 1:].reshape(height, width, bpp), filters)
    return out.reshape(height, stride).view(">u2").reshape(height, width, channels).astype(np.uint16)


def _unfilter(data: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Undo PNG row filters on (H, W, bpp) bytes.

    Rows filtered with None / Sub / Up only are undone row by row (Sub is a cumulative sum);
    Average and Paeth depend on the left neighbour's *decoded* value, so images using them
    are decoded along anti-diagonals (a wavefront): every pixel of one diagonal depends only
    on the previous two, so each step is one vectorised operation.
    """
    h, w, bpp = data.shape
    if filters.max(initial=0) <= 2:
        out = np.empty((h, w, bpp), np.uint8)
        prev = np.zeros((w, bpp), np.int64)
        for y in range(h):
            row = data[y].astype(np.int64)
            f = filters[y]
            if f == 1:
                row = np.cumsum(row, axis=0)
            elif f == 2:
                row = row + prev
            prev = row & 255
            out[y] = prev
        return out
    # Skewed layout: diagonal d = x + y is one contiguous slab S[d + 2, y + 1], so each
    # step reads its neighbours as slices; zero padding stands for pixels outside the image.
    ys, xs = np.mgrid[0:h, 0:w]
    ds = ys + xs
    skew = np.zeros((h + w - 1, h, bpp), np.int32)
    skew[ds, ys] = data
    s = np.zeros((h + w + 1, h + 1, bpp), np.int32)
    f_all = filters.astype(np.int32)[:, None]
    for d in range(h + w - 1):
        lo, hi = max(0, d - w + 1), min(h, d + 1)
        a = s[d + 1, lo + 1:hi + 1]   # left
        b = s[d + 1, lo:hi]           # up
        c = s[d, lo:hi]               # up-left
        f = f_all[lo:hi]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.where(f == 4, paeth, np.where(f == 3, (a + b) >> 1, np.where(f == 2, b, np.where(f == 1, a, 0))))
        s[d + 2, lo + 1:hi + 1] = (skew[d, lo:hi] + pred) & 255
    return s[ds + 2, ys + 1].astype(np.uint8)


# -- resizing ------------------------------------------------------------------------------
def centre_square(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, size) of the centred square crop of an image of the given size."""
    size = min(height, width)
    return (height - size) // 2, (width - size) // 2, size


def to_resolution(img: Tensor, resolution: int, mode: str = "crop", *, kind: str = "image") -> Tensor:
    """Bring ``img`` ((C, H, W) or (B, C, H, W)) to ``resolution`` x ``resolution``.

    mode ``"crop"``: centre square crop, then resize; ``"stretch"``: resize the whole image
    (changes the aspect ratio). Shrinking uses area (box-filter) averaging, enlarging
    bilinear interpolation. kind ``"mask"``: the resized mask is thresholded at 0.5, so it
    stays in {0, 1}. Images with the same size get the same geometry, so an image and its
    ground-truth layers stay aligned.
    """
    if mode not in ("crop", "stretch"):
        raise ValueError(f"mode must be 'crop' or 'stretch', got {mode!r}")
    batched = img.dim() == 4
    x = img if batched else img[None]
    if mode == "crop":
        top, left, size = centre_square(x.shape[-2], x.shape[-1])
        x = x[..., top:top + size, left:left + size]
    x = resize(x, resolution)
    if kind == "mask":
        x = (x >= 0.5).to(img.dtype)
    return x if batched else x[0]


def resize(x: Tensor, resolution: int) -> Tensor:
    """(B, C, H, W) -> (B, C, resolution, resolution): area when shrinking, bilinear when enlarging."""
    h, w = x.shape[-2:]
    if (h, w) == (resolution, resolution):
        return x.clone()
    x = x.float()
    if h >= resolution and w >= resolution:
        return F.interpolate(x, size=(resolution, resolution), mode="area")
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


# -- writing -------------------------------------------------------------------------------
def _png_chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)


def _filter_rows(raw: np.ndarray, bpp: int, filters: np.ndarray) -> np.ndarray:
    """Apply PNG row filters (one type per row) to (H, W*bpp) bytes; vectorised, since
    encoding predicts from the *unfiltered* neighbours."""
    x = raw.astype(np.int32)
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    b = np.zeros_like(x)
    b[1:] = x[:-1]
    c = np.zeros_like(x)
    c[1:, bpp:] = x[:-1, :-bpp]
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    f = filters[:, None]
    pred = np.select([f == 1, f == 2, f == 3, f == 4], [a, b, (a + b) >> 1, paeth], 0)
    return ((x - pred) & 255).astype(np.uint8)


def encode_png(array: np.ndarray, bits: int = 8, filters: str | np.ndarray = "paeth") -> bytes:
    """Encode an (H, W) or (H, W, C) unsigned-integer array (C = 1..4) as PNG bytes."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, ch = arr.shape
    if ch not in (1, 2, 3, 4):
        raise ValueError(f"PNG needs 1 to 4 channels, got {ch}")
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    dtype = np.dtype(">u2") if bits == 16 else np.dtype(np.uint8)
    raw = np.ascontiguousarray(arr.astype(dtype)).view(np.uint8).reshape(h, w * ch * (bits // 8))
    if isinstance(filters, str):
        code = {"none": 0, "sub": 1, "up": 2, "average": 3, "paeth": 4}[filters]
        filters = np.full(h, code, np.int32)
    filtered = _filter_rows(raw, ch * bits // 8, np.asarray(filters, np.int32))
    body = np.concatenate([np.asarray(filters, np.uint8)[:, None], filtered], axis=1).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, bits, ctype, 0, 0, 0)
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(body, 6)) + _png_chunk(b"IEND", b"")


def write_png(path: str | os.PathLike, tensor: Tensor | np.ndarray, bits: int = 8) -> Path:
    """Write a float image in [0, 1] ((C, H, W) tensor with C = 1..4, or (H, W)) as an 8- or
    16-bit PNG, atomically (:func:`joinbench.env.write_atomic`)."""
    x = tensor.detach().float().cpu().numpy() if isinstance(tensor, Tensor) else np.asarray(tensor, np.float32)
    if x.ndim == 3:
        x = x.transpose(1, 2, 0)
    elif x.ndim != 2:
        raise ValueError(f"write_png needs (C, H, W) or (H, W), got shape {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError(f"write_png: image for {path} holds NaN or infinite values")
    top = 65535 if bits == 16 else 255
    # nearest level, halves rounded up, in float32: the same 8-bit values as viz.to_uint8
    q = (np.clip(x, 0.0, 1.0) * np.float32(top) + np.float32(0.5)).astype(np.uint16 if bits == 16 else np.uint8)
    return write_atomic(path, encode_png(q, bits))


def write_npz(path: str | os.PathLike, **arrays: Tensor | np.ndarray) -> Path:
    """Save named arrays (e.g. linear albedo / shading / specular), as they are (no dtype
    change), to a compressed ``.npz`` atomically (:func:`joinbench.env.write_atomic`)."""
    out = {k: (v.detach().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v)) for k, v in arrays.items()}
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    return write_atomic(path, buf.getvalue())


def read_npz(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load every array of an ``.npz`` as float32 tensors (no pickle)."""
    path = Path(path)
    _check_file(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: torch.from_numpy(np.asarray(data[k], dtype=np.float32)) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, TypeError) as exc:
        raise ImageError(f"{path}: not a readable .npz of numeric arrays ({_short(exc)}); re-export it with numpy.savez.") from None


def npz_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Shapes of the arrays in an ``.npz`` read from the headers only (no data loaded)."""
    path = Path(path)
    _check_file(path)
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, _ = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, _ = np.lib.format.read_array_header_2_0(f)
                shapes[name[:-4]] = tuple(shape)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ImageError(f"{path}: not a readable .npz ({_short(exc)}); re-export it with numpy.savez.") from None
    return shapes


__all__ = [
    "IMAGE_SUFFIXES", "MIN_SIDE", "MAX_SIDE", "MAX_PIXELS",
    "read_image", "image_info", "to_resolution", "resize", "centre_square",
    "write_png", "encode_png", "write_npz", "read_npz", "npz_shapes",
]
