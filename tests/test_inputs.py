"""Every format and colour mode a catalog holds, and every kind of bad file."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from cvmatte.samples import load_photo
from cvmatte.engine.errors import ImageError, ImageTooLarge
from cvmatte.engine.imageio import decode_image


@pytest.fixture(scope="module")
def photo():
    return load_photo("coffee.png")  # 400 x 600


def pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,kw", [("JPEG", {"quality": 95}), ("PNG", {}), ("WEBP", {"lossless": True}),
                                    ("BMP", {}), ("TIFF", {})])
def test_each_format_decodes_to_the_same_rgb(photo, fmt, kw):
    d = decode_image(pil_bytes(Image.fromarray(photo), fmt, **kw), f"x.{fmt.lower()}")
    assert d.rgb.shape == photo.shape and d.rgb.dtype == np.uint8 and d.alpha is None
    tol = 4.0 if fmt == "JPEG" else 0.0
    assert np.abs(d.rgb.astype(float) - photo).mean() <= tol


def test_exif_orientation_is_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    d = decode_image(pil_bytes(Image.fromarray(photo), "JPEG", exif=exif, quality=95), "rotated.jpg")
    assert d.rgb.shape == (photo.shape[1], photo.shape[0], 3)
    expected = np.rot90(photo, k=-1)
    assert np.abs(d.rgb.astype(float) - expected).mean() < 4.0


def test_grayscale_and_16_bit_become_rgb(photo):
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    d = decode_image(pil_bytes(Image.fromarray(grey), "PNG"), "grey.png")
    assert d.rgb.shape == photo.shape and (d.rgb[..., 0] == grey).all() and (d.rgb[..., 2] == grey).all()
    grey16 = grey.astype(np.uint16) * 257
    ok, png16 = cv2.imencode(".png", grey16)
    d16 = decode_image(png16.tobytes(), "grey16.png")
    assert np.abs(d16.rgb[..., 0].astype(int) - grey).max() <= 1
    rgb16 = cv2.cvtColor(photo, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    ok, tif16 = cv2.imencode(".tiff", rgb16)
    d16c = decode_image(tif16.tobytes(), "colour16.tiff")
    assert np.abs(d16c.rgb.astype(int) - photo).max() <= 1


def test_cmyk_jpeg_converts_to_rgb(photo):
    d = decode_image(pil_bytes(Image.fromarray(photo).convert("CMYK"), "JPEG", quality=95), "cmyk.jpg")
    assert d.rgb.shape == photo.shape
    assert np.abs(d.rgb.astype(float) - photo).mean() < 8.0


def test_palette_with_transparency_and_rgba_keep_their_alpha(photo):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[:, :100, 3] = 0
    d = decode_image(pil_bytes(Image.fromarray(rgba), "PNG"), "rgba.png")
    assert d.alpha is not None and d.alpha[:, :100].max() == 0 and d.alpha[:, 100:].min() == 1
    pal = Image.fromarray(photo).quantize(64)
    pal.info["transparency"] = 0
    dp = decode_image(pil_bytes(pal, "PNG", transparency=0), "palette.png")
    assert dp.alpha is not None and dp.rgb.shape == photo.shape
    opaque = decode_image(pil_bytes(Image.fromarray(photo).quantize(64), "PNG"), "palette-opaque.png")
    assert opaque.alpha is None


def test_own_transparency_stays_transparent_in_the_cut_out(matter, photo):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[:, :150, 3] = 0  # a left strip the file itself says is empty
    r = matter.matte(rgba)
    assert r.alpha[:, :150].max() == 0.0
    assert r.alpha[150:250, 250:350].mean() > 0.9


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming a huge image, with a tiny body: a decompression bomb's shape."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name,data,match", [
    ("empty.jpg", b"", "empty file"),
    ("notes.jpg", b"this is a text file, not a photo\n" * 20, "not a readable image"),
    ("noise.png", bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not a readable image"),
])
def test_bad_bytes_get_a_clear_error_naming_the_file(name, data, match):
    with pytest.raises(ImageError, match=match) as err:
        decode_image(data, name)
    assert str(err.value).startswith(name)


def test_truncated_jpeg_and_png_are_refused(photo):
    for fmt in ("JPEG", "PNG"):
        data = pil_bytes(Image.fromarray(photo), fmt)
        with pytest.raises(ImageError, match="truncated|corrupt|not a readable") as err:
            decode_image(data[: len(data) // 2], f"cut.{fmt.lower()}")
        assert "cut." in str(err.value)


def test_over_the_pixel_limit_and_bombs_are_refused_before_decoding(photo):
    data = pil_bytes(Image.fromarray(photo), "PNG")
    with pytest.raises(ImageTooLarge, match="pixel limit"):
        decode_image(data, "big.png", max_pixels=100_000)
    bomb = _png_header_only(60_000, 60_000)  # 3.6 gigapixels declared in 200 bytes
    with pytest.raises(ImageTooLarge) as err:
        decode_image(bomb, "bomb.png")
    assert "bomb.png" in str(err.value)


def test_pil_images_of_any_mode_go_through_the_api(matter, photo):
    from PIL import Image as PILImage

    palette = PILImage.fromarray(photo).quantize(64)
    r = matter.matte(palette)  # a palette image's array is indices, not colours: must be converted
    assert r.alpha.shape == photo.shape[:2]
    reference = matter.matte(np.asarray(palette.convert("RGB")))
    np.testing.assert_allclose(r.alpha, reference.alpha, atol=1e-5)
