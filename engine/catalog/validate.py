"""Validation: every input file classified from its header (Pillow reads no pixels here) and its
bytes' sha256, before any model work; identical contents marked; output stems planned."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import imageio
from ..errors import CvmatteError
from ..outputs import SkuResolver


@dataclass
class Entry:
    """One input file as validation saw it."""

    input: str
    sha256: str = ""
    sku: str = ""
    format: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    #: The first input with identical bytes (this one is served from the cache).
    duplicate_of: str | None = None
    #: Why validation refused the file; None when accepted.
    reject: str | None = None
    #: Output file stem, unique within the SKU.
    stem: str = ""
    #: The resolved path: the same file however it was spelled (what resume matches on).
    path: str = ""
    #: The file's bytes when they came from memory (a service upload), not from a path.
    data: bytes | None = field(default=None, repr=False, compare=False)


def inspect(path: Path, sku: SkuResolver, min_side: int, max_pixels: int) -> Entry:
    e = Entry(str(path), sku=sku(path), path=str(imageio.resolved_path(Path(path))))
    try:
        data = imageio.read_bytes(path)
    except CvmatteError as err:
        e.reject = str(err)
        return e
    e.sha256 = hashlib.sha256(data).hexdigest()
    if not data:
        e.reject = f"{path}: empty file (0 bytes)"
        return e
    try:
        header = imageio.image_header(data, str(path))
    except CvmatteError as err:
        e.reject = str(err)
        return e
    if header is None:
        e.reject = f"{path}: not a readable image (no format Pillow knows)"
        return e
    e.format, (e.width, e.height), e.mode = header
    if e.format not in imageio.ACCEPTED_FORMATS:
        e.reject = f"{path}: {e.format} is not a catalog format (accepted: {', '.join(sorted(imageio.ACCEPTED_FORMATS))})"
    elif min(e.width, e.height) < min_side:
        e.reject = f"{path}: {e.width}x{e.height} is smaller than {min_side} px on a side"
    elif e.width * e.height > max_pixels:
        e.reject = f"{path}: {e.width}x{e.height} is over the pixel limit ({max_pixels / 1e6:.0f} MP)"
    return e


def validate(paths: list[Path], sku: SkuResolver | None = None, min_side: int = 32,
             max_pixels: int = imageio.DEFAULT_MAX_PIXELS, workers: int = 4) -> list[Entry]:
    """Inspect every file and mark identical contents (output stems are claimed by the run)."""
    sku = sku or SkuResolver()
    with ThreadPoolExecutor(workers) as pool:
        entries = list(pool.map(lambda p: inspect(Path(p), sku, min_side, max_pixels), paths))
    first: dict[str, str] = {}
    for e in entries:
        if e.reject is None:
            e.duplicate_of = first.setdefault(e.sha256, e.input)
            if e.duplicate_of == e.input:
                e.duplicate_of = None
    return entries
