"""engine/gpu/decode: which files nvjpeg may decode (from real files made with Pillow), the batch
decoder's two paths and its per-item errors, EXIF orientation on the tensor, and the device-side
resize + normalise against preprocess.coarse_input. On the CPU the nvjpeg path runs with a Pillow
stand-in for torchvision's decoder; the real nvjpeg test carries the `gpu` marker."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

torch = pytest.importorskip("torch")

from cvmatte.engine import imageio, preprocess  # noqa: E402
from cvmatte.engine.errors import ImageError, ImageTooLarge  # noqa: E402
from cvmatte.engine.gpu import decode  # noqa: E402
from cvmatte.engine.spec import ModelSpec  # noqa: E402
from cvmatte.samples import load_photo  # noqa: E402

SPEC = ModelSpec(name="t", input_size=(320, 320), input_name="image", output_name="alpha")


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _rotated_jpeg(rgb: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(Image.fromarray(rgb), "JPEG", quality=92, exif=exif)


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    photo = load_photo("coffee.png")                   # 400 x 600
    small = np.ascontiguousarray(photo[::2, ::2])       # 200 x 300
    im = Image.fromarray(small)
    rgba = np.dstack([small, np.linspace(0, 255, small.shape[1], dtype=np.uint8)[None].repeat(small.shape[0], 0)])
    baseline = _save(Image.fromarray(photo), "JPEG", quality=92)
    twelve = bytearray(baseline)
    sof = twelve.index(b"\xff\xc0")
    twelve[sof + 4] = 12                                # the frame's sample precision
    arith = bytearray(baseline)
    arith[sof + 1] = 0xC9                               # SOF9: arithmetic coding
    mpo = io.BytesIO()
    im.save(mpo, "MPO", save_all=True, append_images=[Image.fromarray(small[::-1])])
    return {
        "baseline.jpg": baseline,
        "progressive.jpg": _save(im, "JPEG", quality=90, progressive=True),
        "grey.jpg": _save(im.convert("L"), "JPEG", quality=90),
        "rotated6.jpg": _rotated_jpeg(small, 6),
        "rotated3.jpg": _rotated_jpeg(small, 3),
        "mpo.jpg": mpo.getvalue(),
        "cmyk.jpg": _save(im.convert("CMYK"), "JPEG", quality=90),
        "12bit.jpg": bytes(twelve),
        "arithmetic.jpg": bytes(arith),
        "truncated.jpg": baseline[: len(baseline) // 2],
        "alpha.png": _save(Image.fromarray(rgba, "RGBA"), "PNG"),
        "16bit.png": _save(Image.fromarray((small[..., 0].astype(np.uint16) * 257)), "PNG"),
        "palette.png": _save(im.convert("P"), "PNG"),
        "broken.jpg": b"this is not an image at all",
    }


NVJPEG = ["baseline.jpg", "progressive.jpg", "grey.jpg", "rotated6.jpg", "rotated3.jpg", "mpo.jpg"]
REASONS = {
    "cmyk.jpg": "CMYK JPEG",
    "12bit.jpg": "12-bit JPEG",
    "arithmetic.jpg": "arithmetic-coded JPEG",
    "truncated.jpg": "JPEG without its end marker (truncated, or data after it)",
    "alpha.png": "not a JPEG: PNG, with alpha",
    "16bit.png": "not a JPEG: PNG, 16-bit",
    "palette.png": "not a JPEG: PNG, palette",
    "broken.jpg": "not an image Pillow recognises",
}


def test_route_reads_the_header_and_says_why(files):
    # Progressive JPEGs go to nvjpeg too (its hybrid backend decodes them); EXIF orientation is
    # applied on the device after decoding, so a rotated JPEG stays on the GPU path.
    for name in NVJPEG:
        assert decode.route(files[name]) is None, name
    for name, reason in REASONS.items():
        assert decode.route(files[name]) == reason, name
    assert decode.route(b"") == "empty file"
    assert decode._inspect(files["rotated6.jpg"])[1:] == (6, (300, 200))  # (width, height) as stored


def test_orient_matches_pillows_exif_transpose():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
    t = torch.from_numpy(rgb).permute(2, 0, 1)
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        im = Image.open(io.BytesIO(_save(Image.fromarray(rgb), "PNG", exif=exif)))
        want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        assert np.array_equal(decode.orient(t, o).permute(1, 2, 0).numpy(), want), o


def _pillow_stand_in(calls: list[int], fail_on: bytes | None = None):
    """What nvjpeg does, on the CPU: RGB (greyscale replicated), no EXIF orientation, one call per batch."""
    def decode_jpegs(tensors, device):
        calls.append(len(tensors))
        outs = []
        for t in tensors:
            data = t.numpy().tobytes()
            if fail_on is not None and data == fail_on:
                raise RuntimeError("nvjpegDecode failed: 5\nmore")
            im = Image.open(io.BytesIO(data)).convert("RGB")
            outs.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).to(device))
        return outs
    return decode_jpegs


def _check_against_decode_image(files, names, got):
    for name, d in zip(names, got):
        try:
            want = imageio.decode_image(files[name], name)
        except ImageError as e:  # the broken file, and the JPEGs whose headers the fixture forged
            assert isinstance(d, ImageError) and str(d) == str(e), name
            continue
        assert isinstance(d, decode.Decoded), (name, d)
        assert d.rgb.dtype == torch.uint8 and d.rgb.shape == (3, *want.rgb.shape[:2]), name
        assert np.array_equal(d.rgb.permute(1, 2, 0).numpy(), want.rgb), name
        if want.alpha is None:
            assert d.alpha is None, name
        else:
            assert d.alpha.dtype == torch.float32 and np.array_equal(d.alpha.numpy(), want.alpha), name


def test_batch_decoder_on_the_cpu_decodes_everything_like_decode_image(files):
    names = list(files)
    with decode.BatchDecoder("cpu", workers=3) as dec:
        got = dec.decode([(n, files[n]) for n in names])
    _check_against_decode_image(files, names, got)
    assert all(d.decoder == "cpu" for d in got if isinstance(d, decode.Decoded))
    assert dec.counts == {"gpu": 0, "cpu": len(names), "reasons": {"device is cpu, not cuda": len(names)}}


def test_batch_decoder_sends_plain_jpegs_to_the_batched_decoder_in_one_call(files):
    names = list(files)
    calls: list[int] = []
    with decode.BatchDecoder("cpu", workers=3, decode_jpegs=_pillow_stand_in(calls)) as dec:
        got = dec.decode([(n, files[n]) for n in names])
    _check_against_decode_image(files, names, got)  # orientation applied on the tensor
    assert calls == [len(NVJPEG)]
    assert {n for n, d in zip(names, got) if getattr(d, "decoder", None) == "nvjpeg"} == set(NVJPEG)
    assert dec.counts["gpu"] == len(NVJPEG) and dec.counts["cpu"] == len(REASONS)
    assert dec.counts["reasons"] == {r: 1 for r in REASONS.values()}


def test_a_jpeg_the_batched_decoder_refuses_goes_to_the_cpu(files):
    calls: list[int] = []
    names = ["baseline.jpg", "progressive.jpg", "grey.jpg"]
    stand_in = _pillow_stand_in(calls, fail_on=files["progressive.jpg"])
    with decode.BatchDecoder("cpu", decode_jpegs=stand_in) as dec:
        got = dec.decode([(n, files[n]) for n in names])
    _check_against_decode_image(files, names, got)
    assert calls == [3, 1, 1, 1]  # the batch failed, then one by one
    assert [d.decoder for d in got] == ["nvjpeg", "cpu", "nvjpeg"]
    assert dec.counts["reasons"] == {"nvjpeg failed (RuntimeError: nvjpegDecode failed: 5)": 1}


def test_the_pixel_limit_holds_on_both_paths(files):
    with decode.BatchDecoder("cpu", max_pixels=10_000, decode_jpegs=_pillow_stand_in([])) as dec:
        got = dec.decode([("baseline.jpg", files["baseline.jpg"]), ("alpha.png", files["alpha.png"])])
    assert all(isinstance(d, ImageTooLarge) for d in got)


@pytest.mark.parametrize("shape", [(400, 600), (1500, 1000), (2000, 3000), (333, 777), (200, 1300), (250, 400)])
def test_model_input_matches_coarse_input(shape):
    """The cv2 method is cv2.resize's arithmetic: exact where cv2 shrinks by area (the usual case:
    photos larger than the model's input); where it interpolates linearly (enlarging, or a side
    that grows), cv2's 11-bit fixed-point weights move some pixels by one level, 1/255/std =
    0.0175 normalised units. Measured (coffee, 6 shapes): mean 0 (area) to 0.0021, max 0.0175;
    F.interpolate bilinear + antialias: mean 0.002-0.046, max up to 2.19 (a 200x1300 image)."""
    rgb = np.asarray(Image.fromarray(load_photo("coffee.png")).resize(shape[::-1], Image.BICUBIC))
    want = preprocess.coarse_input(rgb, SPEC)
    t = torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()
    got = decode.model_input([t, t], SPEC)
    assert got.shape == (2, 3, 320, 320) and got.dtype == torch.float32
    diff = np.abs(got[0].numpy() - want)
    print(f"{shape}: cv2 method mean {diff.mean():.5f} max {diff.max():.4f}")
    assert diff.mean() < 0.003 and diff.max() < 0.018
    if min(shape[0] / 320, shape[1] / 320) >= 1:  # INTER_AREA proper: the same numbers
        assert diff.max() < 1e-6
    bilinear = np.abs(decode.model_input([t], SPEC, method="bilinear")[0].numpy() - want)
    print(f"{shape}: bilinear+antialias mean {bilinear.mean():.5f} max {bilinear.max():.4f}")
    assert bilinear.mean() < 0.06


def test_model_input_follows_the_specs_channel_order_and_size():
    spec = ModelSpec(name="t", input_size=(64, 96), input_name="image", output_name="alpha",
                     channel_order="BGR", mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))
    rgb = load_photo("coffee.png")
    got = decode.model_input([torch.from_numpy(rgb.copy()).permute(2, 0, 1)], spec)[0].numpy()
    assert np.abs(got - preprocess.coarse_input(rgb, spec)).max() < 1e-6


# --- GPU: skipped with a reason where there is none -------------------------------------------

@pytest.mark.gpu
def test_nvjpeg_decodes_like_the_cpu_decoder(files):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here (torch.cuda.is_available() is False)")
    dec = decode.BatchDecoder("cuda", workers=4)
    if dec.no_gpu_decode:
        pytest.skip(f"no nvjpeg here: {dec.no_gpu_decode}")
    names = list(files)
    with dec:
        got = dec.decode([(n, files[n]) for n in names])
    print(dec.counts)
    by_name = dict(zip(names, got))
    # nvjpeg must take the plain JPEGs; a multi-picture file (MPO: a JPEG with more images after
    # it) may be refused, and then it is decoded on the CPU, which the counts say.
    assert all(by_name[n].decoder == "nvjpeg" for n in NVJPEG if n != "mpo.jpg"), dec.counts
    assert dec.counts["gpu"] + dec.counts["cpu"] == len(names)
    for name, d in zip(names, got):
        try:
            want = imageio.decode_image(files[name], name)
        except ImageError as e:
            assert isinstance(d, ImageError) and str(d) == str(e), name
            continue
        assert d.rgb.is_cuda and d.rgb.shape == (3, *want.rgb.shape[:2]), name
        err = np.abs(d.rgb.permute(1, 2, 0).cpu().numpy().astype(np.int16) - want.rgb).mean()
        print(f"{name}: {d.decoder} mean abs {err:.3f} levels")
        assert err < (2.0 if d.decoder == "nvjpeg" else 1e-9), name  # nvjpeg's IDCT and upsampling differ slightly
        x = decode.model_input([d.rgb], SPEC)
        ref = preprocess.coarse_input(want.rgb, SPEC)
        assert x.is_cuda and np.abs(x[0].cpu().numpy() - ref).mean() < 0.05, name
