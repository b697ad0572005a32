"""GPU-side input: photos decoded straight onto the device, resized and normalised there.

Plain JPEGs (baseline or progressive, 8-bit, YCbCr or greyscale: most of a catalog) go to nvjpeg
through torchvision.io.decode_jpeg, a whole batch in one call; their EXIF orientation is applied
on the device afterwards (a flip or a transpose: torchvision's CUDA decoder ignores
apply_exif_orientation). Everything else (PNG, WebP, TIFF, CMYK JPEGs, 12-bit JPEGs, files with
trailing data, broken files) goes to cvmatte's own decoder (engine/imageio.decode_image: EXIF,
CMYK, 16-bit, palette and alpha all handled) on a thread pool, and is uploaded as uint8 from
page-locked memory: a quarter of the bytes float32 would move. `route` says which way a file
goes, from its header alone.

`model_input` is engine/preprocess.coarse_input on the device: the resize is cv2.resize's own
arithmetic (INTER_AREA's box weights when shrinking, INTER_LINEAR's when enlarging) as two
matrix products, rounded to uint8 levels as cv2 does, then the spec's normalisation.
"""

from __future__ import annotations

import io
import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import imageio
from ..errors import ImageError
from ..spec import ModelSpec

#: JPEG frame types nvjpeg decodes (Huffman-coded, 8-bit): SOF0 baseline, SOF2 progressive.
GPU_FRAMES = {0xC0: "baseline", 0xC2: "progressive"}
_FRAME_NAMES = {0xC1: "extended-sequential", 0xC3: "lossless", 0xC5: "differential", 0xC6: "differential",
                0xC7: "differential", 0xC9: "arithmetic-coded", 0xCA: "arithmetic-coded",
                0xCB: "arithmetic-coded", 0xCD: "arithmetic-coded", 0xCE: "arithmetic-coded",
                0xCF: "arithmetic-coded"}
_ORIENTATION = 0x0112


@dataclass
class Decoded:
    """rgb: uint8 [3, H, W] on the device, upright (EXIF orientation applied); alpha: float32
    [H, W] in [0, 1] on the device when the file had its own transparency, else None."""

    rgb: torch.Tensor
    alpha: torch.Tensor | None
    source: str
    #: "nvjpeg" or "cpu": which decoder made it.
    decoder: str
    pages: int = 1


def _jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(SOF marker, sample precision, components) of a JPEG's frame header, read by walking the
    marker segments from SOI; None when the bytes are no JPEG stream or no frame header is found."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        m = data[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD8:  # segments without a length
            i += 2
            continue
        if m in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            return (m, data[i + 4], data[i + 9]) if i + 10 <= n else None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _inspect(data: bytes) -> tuple[str | None, int, tuple[int, int]]:
    """(reason it goes to the CPU decoder or None, EXIF orientation, (width, height))."""
    if not data:
        return "empty file", 1, (0, 0)
    frame = _jpeg_frame(data)
    if frame is not None:  # before Pillow, which refuses 12-bit JPEGs outright
        marker, bits, comps = frame
        if marker not in GPU_FRAMES:
            return f"{_FRAME_NAMES.get(marker, f'SOF{marker - 0xC0}')} JPEG", 1, (0, 0)
        if bits != 8:
            return f"{bits}-bit JPEG", 1, (0, 0)
        if comps == 4:
            return "CMYK JPEG", 1, (0, 0)
        if comps not in (1, 3):
            return f"JPEG with {comps} colour components", 1, (0, 0)
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, mode, size, info = im.format or "?", im.mode, im.size, im.info
            orientation = im.getexif().get(_ORIENTATION, 1) if fmt in ("JPEG", "MPO") else 1
    except Image.DecompressionBombError:
        return "over Pillow's decompression-bomb limit", 1, (0, 0)
    except Exception as e:  # Pillow's plugins raise many kinds for bytes that are no image they know
        return ("not an image Pillow recognises" if frame is None else f"unreadable JPEG header ({e})"), 1, (0, 0)
    if fmt in ("JPEG", "MPO") and frame is None:
        return "JPEG whose frame header was not found", 1, size
    if fmt not in ("JPEG", "MPO"):
        detail = []
        if mode.startswith("I;16"):
            detail.append("16-bit")
        elif mode in ("I", "F"):
            detail.append("32-bit integer" if mode == "I" else "floating point")
        if mode in ("P", "PA"):
            detail.append("palette")
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in info:
            detail.append("with alpha")
        return f"not a JPEG: {fmt}" + (f", {', '.join(detail)}" if detail else ""), 1, size
    if mode == "CMYK":
        return "CMYK JPEG", 1, size
    if mode not in ("RGB", "L"):
        return f"JPEG in mode {mode}", 1, size
    if mode == "RGB" and info.get("adobe_transform") == 0:
        return "RGB-coded JPEG (Adobe, no YCbCr)", 1, size
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "JPEG without its end marker (truncated, or data after it)", 1, size
    return None, orientation if isinstance(orientation, int) else 1, size


def route(data: bytes) -> str | None:
    """None when nvjpeg decodes these bytes (baseline or progressive 8-bit YCbCr or greyscale
    JPEG; any EXIF orientation, applied on the device afterwards); else why they go to the CPU
    decoder, e.g. "CMYK JPEG", "12-bit JPEG", "not a JPEG: PNG, with alpha". Reads the header only."""
    return _inspect(data)[0]


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """image [..., H, W] turned upright as PIL.ImageOps.exif_transpose does for EXIF orientation
    1-8 (other values: unchanged)."""
    h, w = image.dim() - 2, image.dim() - 1
    if orientation == 2:
        return image.flip(w)
    if orientation == 3:
        return image.flip(h, w)
    if orientation == 4:
        return image.flip(h)
    if orientation == 5:
        return image.transpose(h, w)
    if orientation == 6:
        return image.rot90(-1, (h, w))
    if orientation == 7:
        return image.transpose(h, w).flip(h, w)
    if orientation == 8:
        return image.rot90(1, (h, w))
    return image


def _nvjpeg() -> tuple[Callable | None, str | None]:
    """torchvision's batched JPEG decoder, or why it cannot be used."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception as e:  # ImportError, or a torchvision built for another torch (RuntimeError)
        return None, f"torchvision is not usable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"

    def decode(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        if len(tensors) == 1:  # also what a torchvision older than 0.19 (no batched call) takes
            return [decode_jpeg(tensors[0], mode=ImageReadMode.RGB, device=device)]
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)

    return decode, None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


class BatchDecoder:
    """Decodes a batch of (source, bytes) onto `device`: nvjpeg for plain JPEGs, cvmatte's own
    decoder on `workers` threads for the rest. max_pixels: imageio's pixel limit, for both paths.

    counts: {"gpu": images decoded by nvjpeg, "cpu": images sent to the CPU decoder,
    "reasons": {why an image went to the CPU: count}}. When torchvision is not usable or the
    device is no GPU, every image goes to the CPU decoder, counted under that reason.
    decode_jpegs: the batched JPEG decoder (list of uint8 byte tensors, device) -> list of
    uint8 [3, H, W]; default torchvision's nvjpeg on CUDA (tests pass a stand-in on the CPU)."""

    def __init__(self, device, max_pixels: int = imageio.DEFAULT_MAX_PIXELS, workers: int = 8,
                 decode_jpegs: Callable | None = None):
        self.device = torch.device(device)
        self.max_pixels = max_pixels
        self.workers = max(1, int(workers))
        self.counts: dict = {"gpu": 0, "cpu": 0, "reasons": {}}
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        #: Why no image goes to nvjpeg (None when JPEGs do).
        self.no_gpu_decode: str | None = None
        self._decode_jpegs = decode_jpegs
        if decode_jpegs is None:
            if self.device.type != "cuda":
                self.no_gpu_decode = f"device is {self.device.type}, not cuda"
            else:
                self._decode_jpegs, self.no_gpu_decode = _nvjpeg()

    # -- the pool -------------------------------------------------------------------------------
    def _submit(self, source: str, data: bytes) -> Future:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="cvmatte-decode")
            return self._pool.submit(self._decode_on_cpu, source, data)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def __enter__(self) -> "BatchDecoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- decoding -------------------------------------------------------------------------------
    def _decode_on_cpu(self, source: str, data: bytes):
        """On a pool thread: decode_image, then the pixels as uint8 in page-locked memory (for
        CUDA: [H, W, 3], ready for an asynchronous upload) or as [3, H, W] (for the CPU). Returns
        an Exception instead of raising it."""
        try:
            d = imageio.decode_image(data, source, self.max_pixels)
            alpha = None
            if d.alpha is not None:
                a8 = np.rint(d.alpha * 255.0).astype(np.uint8)
                # decode_image's alpha is k/255: as uint8 it is exact and a quarter of the bytes.
                alpha = a8 if np.array_equal(a8.astype(np.float32) / 255.0, d.alpha) else d.alpha
            if self.device.type == "cuda":
                rgb = self._pinned(d.rgb)
                alpha = self._pinned(alpha) if alpha is not None else None
            else:
                rgb = torch.from_numpy(np.ascontiguousarray(d.rgb.transpose(2, 0, 1)))
                alpha = torch.from_numpy(np.array(alpha, copy=True)) if alpha is not None else None
            return rgb, alpha, d.source, d.pages
        except Exception as e:  # ImageError and anything a decoder library raises for one file
            return e if isinstance(e, ImageError) else ImageError(source, f"cannot decode ({_first_line(e)})")

    @staticmethod
    def _pinned(a: np.ndarray) -> torch.Tensor:
        """One copy of `a` into page-locked memory (the cached host allocator's)."""
        t = torch.empty(a.shape, dtype=torch.uint8 if a.dtype == np.uint8 else torch.float32, pin_memory=True)
        t.numpy()[...] = a
        return t

    def _upload(self, host) -> Decoded | Exception:
        if isinstance(host, Exception):
            return host
        rgb, alpha, source, pages = host
        if self.device.type == "cuda":
            rgb = rgb.to(self.device, non_blocking=True).permute(2, 0, 1).contiguous()
        if alpha is not None:
            alpha = alpha.to(self.device, non_blocking=True)
            alpha = alpha.float() / 255.0 if alpha.dtype == torch.uint8 else alpha
        return Decoded(rgb, alpha, source, "cpu", pages)

    def decode(self, items: list[tuple[str, bytes]]) -> list[Decoded | Exception]:
        """items: (source, bytes) -> per item a Decoded, or the ImageError that item raised."""
        results: list[Decoded | Exception | None] = [None] * len(items)
        on_cpu: dict[int, Future] = {}
        reasons: dict[int, str] = {}
        gpu: list[tuple[int, int]] = []  # (item, EXIF orientation)
        for i, (source, data) in enumerate(items):
            if self.no_gpu_decode:
                reason = self.no_gpu_decode
            else:
                reason, orientation, size = _inspect(data)
                if reason is None:
                    try:
                        imageio._check_pixels(size, source, self.max_pixels)
                    except ImageError as e:
                        results[i] = e
                        continue
                    gpu.append((i, orientation))
                    continue
            reasons[i] = reason
            on_cpu[i] = self._submit(source, data)
        n_gpu = 0
        if gpu:
            for (i, orientation), out in zip(gpu, self._decode_jpeg_batch([items[i][1] for i, _ in gpu])):
                if isinstance(out, Exception):  # nvjpeg refused it: the CPU decoder decides
                    reasons[i] = f"nvjpeg failed ({_first_line(out)[:80]})"
                    on_cpu[i] = self._submit(*items[i])
                else:
                    results[i] = Decoded(orient(out, orientation).contiguous(), None, items[i][0], "nvjpeg")
                    n_gpu += 1
        for i in sorted(on_cpu):
            results[i] = self._upload(on_cpu[i].result())
        with self._lock:
            self.counts["gpu"] += n_gpu
            self.counts["cpu"] += len(on_cpu)
            for reason in reasons.values():
                self.counts["reasons"][reason] = self.counts["reasons"].get(reason, 0) + 1
        return results  # type: ignore[return-value]

    def _decode_jpeg_batch(self, blobs: list[bytes]) -> list[torch.Tensor | Exception]:
        """One batched decoder call; when it fails (one bad stream fails them all), one by one."""
        tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
        try:
            return list(self._decode_jpegs(tensors, self.device))
        except Exception:
            outs: list[torch.Tensor | Exception] = []
            for t in tensors:
                try:
                    outs.append(self._decode_jpegs([t], self.device)[0])
                except Exception as e:
                    outs.append(e)
            return outs


# -- resize and normalise on the device -------------------------------------------------------------

def _taps(n_in: int, n_out: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(source indices [n_out, K], weights [n_out, K]) of one axis of cv2.resize. kind: "area"
    (INTER_AREA shrinking both axes: box overlap), "linear" (INTER_LINEAR, half-pixel centres) or
    "area-linear" (INTER_AREA when an axis enlarges: OpenCV's two-tap variant, used on both axes)."""
    s = n_in / n_out
    d = np.arange(n_out, dtype=np.float64)[:, None]
    if kind == "area":
        j = np.floor(d * s) + np.arange(math.ceil(s) + 1)[None]
        w = np.clip(np.minimum(j + 1, (d + 1) * s) - np.maximum(j, d * s), 0, None) / s
        w[j >= n_in] = 0
        return np.clip(j, 0, n_in - 1).astype(np.int64), w
    if kind == "linear":
        f = (d + 0.5) * s - 0.5
        sx = np.floor(f)
        f = f - sx
    else:
        sx = np.floor(d * s)
        f = (d + 1) - (sx + 1) * (n_out / n_in)
        f = np.where(f <= 0, 0.0, f - np.floor(f))
    j = np.clip(np.concatenate([sx, sx + 1], 1), 0, n_in - 1).astype(np.int64)
    return j, np.concatenate([1 - f, f], 1)


@lru_cache(maxsize=32)
def _resize_matrix(n_in: int, n_out: int, kind: str, device: torch.device) -> torch.Tensor:
    """Dense float32 [n_out, n_in]: row i holds output pixel i's source weights."""
    j, w = _taps(n_in, n_out, kind)
    m = torch.zeros((n_out, n_in), dtype=torch.float64)
    m.scatter_add_(1, torch.from_numpy(j), torch.from_numpy(w))
    return m.float().to(device)


def resize_like_cv2(image: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """image [C, H, W] (any dtype, values 0-255) -> float32 [C, h, w] holding uint8 levels, as
    preprocess.resize (cv2.resize, INTER_AREA when the area shrinks, else INTER_LINEAR) gives them."""
    C, H, W = image.shape
    h, w = size_hw
    x = image.float()
    if (H, W) == (h, w):
        return x
    shrink = h * w < H * W
    kind = ("area" if H >= h and W >= w else "area-linear") if shrink else "linear"
    my = _resize_matrix(H, h, kind, x.device)
    mx = _resize_matrix(W, w, kind, x.device)
    if H * W * w + H * w * h <= h * H * W + h * W * w:  # the cheaper order of the two products
        y = torch.matmul(my, torch.matmul(x, mx.T))
    else:
        y = torch.matmul(torch.matmul(my, x), mx.T)
    return y.round_().clamp_(0, 255)  # cv2 writes uint8: round to levels as it does


def resize_bilinear(image: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """The plain torch alternative: F.interpolate bilinear, antialiased when shrinking, rounded to
    uint8 levels. Differs from cv2's INTER_AREA (a triangle filter, not a box)."""
    x = image.float()
    if tuple(x.shape[-2:]) == tuple(size_hw):
        return x
    shrink = size_hw[0] * size_hw[1] < x.shape[-2] * x.shape[-1]
    y = F.interpolate(x[None], size=tuple(size_hw), mode="bilinear", align_corners=False, antialias=shrink)[0]
    return y.round_().clamp_(0, 255)


def model_input(images: list[torch.Tensor], spec: ModelSpec, method: str = "cv2") -> torch.Tensor:
    """images: uint8 [3, H, W] on one device -> float32 [N, 3, h, w] at spec.input_size,
    normalised as spec says: preprocess.coarse_input on the device. method: "cv2" (cv2.resize's
    weights, the CPU path's numbers) or "bilinear" (F.interpolate, antialiased)."""
    if not images:
        raise ValueError("model_input needs at least one image")
    resize = {"cv2": resize_like_cv2, "bilinear": resize_bilinear}[method]
    device = images[0].device
    h, w = spec.input_size
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(3, 1, 1)
    out = torch.empty((len(images), 3, h, w), dtype=torch.float32, device=device)
    for k, image in enumerate(images):
        x = resize(image, (h, w)) * (1.0 / 255.0)
        if spec.channel_order == "BGR":
            x = x.flip(0)
        out[k] = (x - mean) / std
    return out
