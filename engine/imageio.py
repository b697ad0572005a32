"""Decoding any photo a catalog holds into RGB uint8, and writing outputs atomically.

Decoding goes through Pillow (EXIF orientation, CMYK, palette, 16-bit, alpha, decompression-bomb
guard) and falls back to OpenCV for what Pillow cannot open (16-bit colour TIFF, for example).
"""

from __future__ import annotations

import glob
import io
import os
import re
import socket
import stat
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, ImageTooLarge

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: Formats a catalog or the service accepts (Pillow's names); MPO is what some cameras call their JPEGs.
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF"})
DEFAULT_MAX_PIXELS = 64_000_000


@dataclass
class DecodedImage:
    """rgb: uint8 [H, W, 3]; alpha: float32 [H, W] in [0, 1] when the file had its own transparency."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    source: str
    #: Pages or frames in the file (a multi-page TIFF, an animated WebP or PNG); the first is used.
    pages: int = 1


def decode_image(data: bytes, source: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    if not data:
        raise ImageError(source, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            _check_pixels(im.size, source, max_pixels)
            # MPO (a phone's JPEG with a depth or preview frame) is one photo, not pages.
            pages = getattr(im, "n_frames", 1) if im.format != "MPO" else 1
            im.load()
            im = ImageOps.exif_transpose(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(source, f"refused as a decompression bomb ({e})") from None
    except UnidentifiedImageError:
        return _decode_with_opencv(data, source, max_pixels, reason="not an image Pillow recognises")
    except (OSError, SyntaxError, ValueError) as e:
        if "truncated" in str(e).lower() or isinstance(e, SyntaxError):
            raise ImageError(source, f"corrupt or truncated image ({e})") from None
        return _decode_with_opencv(data, source, max_pixels, reason=str(e))
    decoded = from_pil(im, source)
    decoded.pages = pages
    return decoded


def image_header(data: bytes, source: str = "<bytes>") -> tuple[str, tuple[int, int], str] | None:
    """(format, (width, height), mode) from the header alone (no pixels decoded); None when the
    bytes are no image Pillow knows; ImageTooLarge for a decompression bomb."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format or "", im.size, im.mode
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(source, f"refused as a decompression bomb ({e})") from None
    except Exception:  # Pillow's plugins raise many kinds for bytes that are not their format
        return None


def read_bytes(path: str | Path) -> bytes:
    """A regular file's bytes; a FIFO, a device or a socket is refused before it is opened (reading
    /dev/zero would never end, a FIFO would block)."""
    path = Path(path)
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(path, "is a directory, not an image")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(path, "is not a regular file (a device, FIFO or socket): not read")
        return path.read_bytes()
    except OSError as e:
        raise ImageError(path, f"cannot read ({e.strerror or e})") from None


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    return decode_image(read_bytes(path), str(path), max_pixels)


def _check_pixels(size: tuple[int, int], source: str, max_pixels: int) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(source, f"has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLarge(
            source, f"{w}x{h} = {w * h / 1e6:.1f} MP is over the pixel limit of {max_pixels / 1e6:.1f} MP"
        )


def from_pil(im: Image.Image, source: str = "<PIL image>") -> DecodedImage:
    """Any Pillow mode to RGB uint8 plus the image's own alpha, if it has one."""
    mode = im.mode
    alpha = None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float32)
        peak = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        g = np.clip(a * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        return DecodedImage(np.repeat(g[..., None], 3, axis=2), None, source)
    if mode in ("P", "PA") and "transparency" in im.info or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(im.convert("RGBA"))
        alpha = rgba[..., 3].astype(np.float32) / 255.0
        if alpha.min() >= 1.0:
            alpha = None  # an alpha channel that is opaque everywhere says nothing
        return DecodedImage(np.ascontiguousarray(rgba[..., :3]), alpha, source)
    # CMYK, YCbCr, L, 1, P without transparency: Pillow's conversions are right for these.
    return DecodedImage(np.asarray(im.convert("RGB")), None, source)


def _decode_with_opencv(data: bytes, source: str, max_pixels: int, reason: str) -> DecodedImage:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageError(source, f"not a readable image ({reason})")
    _check_pixels((arr.shape[1], arr.shape[0]), source, max_pixels)
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif arr.dtype != np.uint8:
        a = arr.astype(np.float32)
        a = a / max(float(a.max()), 1e-6) * 255.0
        arr = np.clip(a + 0.5, 0, 255).astype(np.uint8)
    alpha = None
    if arr.ndim == 2:
        rgb = cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    elif arr.shape[2] == 4:
        rgb = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
        alpha = arr[..., 3].astype(np.float32) / 255.0
        if alpha.min() >= 1.0:
            alpha = None
    else:
        rgb = cv2.cvtColor(arr[..., :3], cv2.COLOR_BGR2RGB)
    return DecodedImage(rgb, alpha, source)


# ---- writing -------------------------------------------------------------------------------------

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's host and pid in the name: a later run removes the temporary files of dead
    # writers only (stray_part), never those of a run still writing.
    # The name's start only: a name near the 255-byte limit still has room for the rest.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.{_HOST}-{os.getpid()}-", suffix=".part",
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


_HOST = ("".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host")[:32]
_PART = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[^.]*\.part$")


def stray_part(path: Path, older_than_s: float = 86400.0) -> bool:
    """True for a temporary file (see atomic_write_bytes) whose writer is gone: on this host, a
    dead pid; from another host (a shared folder), older than older_than_s."""
    m = _PART.match(path.name)
    if not m:
        return False
    if m["host"] == _HOST:
        try:
            os.kill(int(m["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False
    try:
        return time.time() - path.stat().st_mtime > older_than_s
    except OSError:
        return False


_PAETH = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH] if hasattr(cv2, "IMWRITE_PNG_FILTER") else []


def encode_png(image: np.ndarray, compression: int = 3, bgr: bool = False) -> bytes:
    """image: uint8 [H, W] (grey), [H, W, 3] RGB or [H, W, 4] RGBA (BGR / BGRA with bgr=True).

    OpenCV's encoder with zlib's run-length strategy: on cut-outs (large transparent areas) it
    measured 5x faster than Pillow's default and 35% faster and 10% smaller than zlib's default
    strategy at level 3. Every row with PNG's Paeth filter instead of libpng trying all five per
    row: 1.5-1.7x faster at the same size (0.4 MP cut-outs 41 -> 28 ms/MP, +0.4%; 16 MP 539 -> 314
    ms, 3.79 -> 3.78 MB; benchmarks/NOTES.md). OpenCV older than 4.11 has no filter option: all five.
    """
    if bgr or image.ndim == 2:  # already in OpenCV's channel order: no converted copy
        pixels = image
    elif image.shape[2] == 4:
        pixels = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    else:
        pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, compression,
                                         cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE, *_PAETH])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def resolved_path(p: Path) -> Path:
    """p with its links followed, or p made absolute where they loop (Python 3.11's resolve raises
    RuntimeError on a loop; later versions OSError)."""
    try:
        return p.resolve()
    except (RuntimeError, OSError):
        return p.absolute()


def list_images(inputs: list[str | Path], skipped: list[Path] | None = None,
                exclude: list[Path] | None = None) -> list[Path]:
    """Files, folders (recursively, image suffixes only) and glob patterns, in a stable order.

    A named file is kept whatever its suffix, so that a bad file gets its own error instead of
    vanishing; a name that matches nothing raises. skipped: receives the files of the folders
    that were left out (other suffixes, hidden files, not regular files), so a caller can say so.
    exclude: folders whose files are never inputs (a run's own output folder inside its input);
    folders that hold a `.cvmatte` folder (another run's output) are left out too.
    """
    out: list[Path] = []
    barred = [resolved_path(Path(e)) for e in exclude or []]

    def wanted(q: Path, root: Path) -> bool:
        if barred and any(resolved_path(q).is_relative_to(b) for b in barred):
            return False
        if any(part.startswith(".") for part in q.relative_to(root).parts):  # .cache/, .DS_Store
            return False
        if q.suffix.lower() in IMAGE_SUFFIXES and (q.is_file() or (q.is_symlink() and not q.exists())):
            return True  # a broken or looping link named as an image gets its own failed row
        if skipped is not None and not q.is_dir():
            skipped.append(q)
        return False

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            # Any cvmatte output folder inside (it holds .cvmatte/): cut-outs are not inputs.
            barred += [m.parent.resolve() for m in p.rglob(".cvmatte") if m.is_dir()]
            out.extend(sorted(q for q in p.rglob("*") if wanted(q, p)))
        elif p.exists() or p.is_symlink():  # a broken or looping link: its own failed row
            out.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, folder or matching pattern")
            out.extend(matches)
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = resolved_path(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
