"""The catalog pipeline: validate and classify every file, matte what is new, flag what a person
should look at, write standard outputs and a manifest; resumable, safe to share an output folder,
and the same per-image work on one machine (a thread pool) or many (Ray, catalog_ray.py).

    OUT/<SKU>/<stem>_matte.png        RGBA cut-out at the original resolution
    OUT/<SKU>/<stem>_alpha.png        with alpha=True
    OUT/<SKU>/<stem>_template.jpg     with a template (templates.py)
    OUT/manifest.jsonl                one row per input and run (input, sha256, SKU, status, outputs,
                                      model, timings, quality, flags, error)
    OUT/summary.json                  the last run: counts, failures, review list, throughput
    OUT/.cache/                       alpha per (file bytes, model, settings): a re-run does no model work

Folders are by SKU, not by date as `cvmatte matte` does: a catalog is re-run and resumed, and its
outputs must land in the same place every time.

Safety: every output and cache file is written to a temporary file and renamed; a manifest row is
appended under an exclusive lock, in one write, only after the image's outputs exist. So a
`kill -9` leaves at worst an image whose outputs exist without its row (it is redone, from the
cache, by `--resume`) and a stray temporary file (removed by the next run); two runs writing into
one folder interleave whole rows and whole files, never parts of them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from . import imageio, quality
from .errors import CvmatteError
from .matting import MatteResult
from .outputs import OutputOptions, SkuResolver, encode_outputs, safe_name
from .settings import MatteSettings
from .templates import Template, render

#: Settings that do not change the alpha (speed only) and so do not enter the cache key.
_SPEED_ONLY = {"batch_size", "io_workers", "max_inflight", "flush_ms", "ring_depth", "tile_batch", "max_pixels"}


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


@dataclass
class CatalogOptions:
    rgba: bool = True
    alpha: bool = False
    template: Template | None = None
    thresholds: quality.QualityThresholds = field(default_factory=quality.QualityThresholds)
    #: Images smaller than this on either side are refused (thumbnails, icons, tracking pixels).
    min_side: int = 32
    jpeg_quality: int = 92


# ---------------------------------------------------------------------------- validation


def inspect(path: Path, sku: SkuResolver, min_side: int, max_pixels: int) -> Entry:
    """Header-only checks (Pillow reads no pixels here) plus the file's sha256."""
    e = Entry(str(path), sku=sku(path))
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
             max_pixels: int = imageio.DEFAULT_MAX_PIXELS, workers: int = 4, taken: dict | None = None) -> list[Entry]:
    """Inspect every file, mark identical contents, and give each accepted file a unique output
    stem within its SKU. taken: (sku, stem) -> input already named by an earlier run (kept)."""
    sku = sku or SkuResolver()
    with ThreadPoolExecutor(workers) as pool:
        entries = list(pool.map(lambda p: inspect(Path(p), sku, min_side, max_pixels), paths))
    first: dict[str, str] = {}
    for e in entries:
        if e.reject is None:
            e.duplicate_of = first.setdefault(e.sha256, e.input)
            if e.duplicate_of == e.input:
                e.duplicate_of = None
    plan_stems(entries, taken or {})
    return entries


def plan_stems(entries: list[Entry], taken: dict[tuple[str, str], str]) -> None:
    """`a.jpg` and `a.png` in one SKU become `a` and `a_png`; a stem an earlier run gave an input
    stays that input's."""
    owner = dict(taken)
    by_input = {v: k[1] for k, v in taken.items()}
    for e in entries:
        if e.input in by_input:
            e.stem = by_input[e.input]
            continue
        p = Path(e.input)
        base = safe_name(p.stem, "image")
        candidates = [base, f"{base}_{safe_name(p.suffix.lstrip('.').lower(), 'noext')}"]
        candidates += [f"{candidates[1]}_{n}" for n in range(2, 10_000)]
        e.stem = next(c for c in candidates if owner.get((e.sku, c), e.input) == e.input)
        owner[(e.sku, e.stem)] = e.input


# ---------------------------------------------------------------------------- cache and manifest


class AlphaCache:
    """Final alphas keyed by sha256(file bytes) + model name and sha256 + settings. The PNG is
    written first and the JSON last: the JSON is the entry's commit mark."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def key(self, file_sha256: str, model_id: str, settings_digest: str) -> str:
        return hashlib.sha256(f"{file_sha256}|{model_id}|{settings_digest}".encode()).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        d = self.folder / key[:2]
        return d / f"{key}.png", d / f"{key}.json"

    def get(self, key: str) -> tuple[np.ndarray, dict] | None:
        png, meta = self._paths(key)
        if not meta.is_file():
            return None
        alpha = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        if alpha is None:
            return None
        return alpha, json.loads(meta.read_text())

    def put(self, key: str, alpha_u8: np.ndarray, record: dict) -> None:
        png, meta = self._paths(key)
        imageio.atomic_write_bytes(png, imageio.encode_png(alpha_u8))
        imageio.atomic_write_bytes(meta, json.dumps(record).encode())


class Manifest:
    """JSON lines, appended whole under an exclusive lock (safe across processes and threads)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def rows(self) -> list[dict]:
        """Every complete row; a line cut short by a kill is skipped."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def append(self, row: dict) -> None:
        line = (json.dumps(row, sort_keys=True) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size:  # a row cut short by a kill: end its line so ours stands alone
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        line = b"\n" + line
            os.write(fd, line)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def settings_digest(settings: MatteSettings, refiner_name: str) -> str:
    d = {k: v for k, v in asdict(settings).items() if k not in _SPEED_ONLY}
    d["refiner"] = refiner_name
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def output_paths(out: Path, e: Entry, options: CatalogOptions) -> dict[str, Path]:
    d = Path(out) / safe_name(e.sku)
    paths = {}
    if options.rgba:
        paths["rgba"] = d / f"{e.stem}_matte.png"
    if options.alpha:
        paths["alpha"] = d / f"{e.stem}_alpha.png"
    if options.template is not None:
        paths["template"] = d / f"{e.stem}_template.jpg"
    return paths


# ---------------------------------------------------------------------------- one image


class Worker:
    """What one model slot does for one accepted entry: decode, alpha (from the cache or the
    engine), quality, outputs, the manifest row. The same object runs in a thread here and inside
    a Ray actor (catalog_ray.py)."""

    def __init__(self, engine, model_id: str, out: Path, options: CatalogOptions, cache: AlphaCache | None = None):
        self.engine = engine
        self.model_id = model_id
        self.out = Path(out)
        self.options = options
        self.cache = cache or AlphaCache(self.out / ".cache")
        self.digest = settings_digest(engine.settings, engine.refiner.name)

    def __call__(self, e: Entry, run_id: str) -> dict:
        t0 = time.perf_counter()
        row = {"input": e.input, "sha256": e.sha256, "sku": e.sku, "run": run_id, "model": self.model_id,
               "settings": self.digest, "duplicate_of": e.duplicate_of, "outputs": {}, "flags": [],
               "quality": None, "cache": None, "error": None, "timings": {}}
        try:
            data = imageio.read_bytes(e.input)
            if hashlib.sha256(data).hexdigest() != e.sha256:
                raise CvmatteError(f"{e.input}: the file changed after validation; run again")
            decoded = imageio.decode_image(data, e.input, self.engine.settings.max_pixels)
            row["timings"]["decode_s"] = time.perf_counter() - t0
            key = self.cache.key(e.sha256, self.model_id, self.digest)
            hit = self.cache.get(key)
            t1 = time.perf_counter()
            if hit is not None:
                alpha = hit[0].astype(np.float32) / 255.0
                measures = hit[1]["quality"]
                foreground = self.engine.foreground(decoded.rgb, alpha)
                row["cache"] = "hit"
            else:
                result = self.engine.matte(decoded.rgb, decoded.alpha)
                alpha, foreground = result.alpha, result.foreground
                measures = quality.measure(alpha, result.coarse)
                self.cache.put(key, result.alpha_u8, {"quality": measures, "input": e.input})
                alpha = result.alpha_u8.astype(np.float32) / 255.0  # what a cache hit would give: runs agree
                row["cache"] = "miss"
            row["timings"]["matte_s"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            row["outputs"] = self._write(e, foreground, alpha)
            row["timings"]["write_s"] = time.perf_counter() - t2
            row["quality"] = measures
            row["flags"] = quality.flags(measures, self.options.thresholds)
            row["status"] = "review" if row["flags"] else "ok"
        except CvmatteError as err:
            row["status"], row["error"] = "failed", str(err)
        except OSError as err:
            row["status"], row["error"] = "failed", f"{e.input}: cannot write output ({type(err).__name__}: {err})"
        except Exception as err:  # one image never ends the run
            row["status"], row["error"] = "failed", f"{e.input}: matting failed ({type(err).__name__}: {err})"
        row["timings"]["total_s"] = time.perf_counter() - t0
        return row

    def _write(self, e: Entry, foreground: np.ndarray, alpha: np.ndarray) -> dict[str, str]:
        paths = output_paths(self.out, e, self.options)
        result = MatteResult(alpha, alpha, foreground)
        encoded = encode_outputs(result, OutputOptions(rgba=self.options.rgba, alpha=self.options.alpha))
        if self.options.template is not None:
            encoded["template"] = imageio.encode_jpeg(render(foreground, alpha, self.options.template),
                                                      self.options.jpeg_quality)
        for kind, path in paths.items():
            imageio.atomic_write_bytes(path, encoded[kind])
        return {k: str(p) for k, p in paths.items()}


# ---------------------------------------------------------------------------- a run


@dataclass
class CatalogReport:
    run_id: str
    rows: list[dict]
    seconds: float
    manifest: Path
    summary: dict

    def by_status(self, status: str) -> list[dict]:
        return [r for r in self.rows if r["status"] == status]


def rejected_row(e: Entry, run_id: str) -> dict:
    return {"input": e.input, "sha256": e.sha256, "sku": e.sku, "run": run_id, "status": "rejected",
            "error": e.reject, "outputs": {}, "flags": [], "quality": None, "cache": None, "duplicate_of": None,
            "model": None, "settings": None, "timings": {}}


def summarize(run_id: str, rows: list[dict], seconds: float, new_rows: int | None = None) -> dict:
    """new_rows: how many of the rows this invocation produced (a resumed run's earlier rows do
    not count towards its images/s)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    fresh = rows if new_rows is None else rows[len(rows) - new_rows:]
    done = [r for r in fresh if r["status"] in ("ok", "review")]
    return {
        "run": run_id, "inputs": len(rows), "counts": counts,
        "cache_hits": sum(r.get("cache") == "hit" for r in rows),
        "model_runs": sum(r.get("cache") == "miss" for r in rows),
        "duplicates": sum(bool(r.get("duplicate_of")) for r in rows),
        "failures": [{"input": r["input"], "error": r["error"]} for r in rows if r["status"] in ("failed", "rejected")],
        "review": [{"input": r["input"], "flags": r["flags"], "outputs": r["outputs"]} for r in rows if r["status"] == "review"],
        "seconds": seconds, "images_per_s": len(done) / seconds if seconds > 0 else 0.0,
    }


def _clean_stray_parts(out: Path) -> None:
    """Temporary files a killed run left behind (never a finished output: those are renamed)."""
    for p in Path(out).rglob(".*.part"):
        try:
            p.unlink()
        except OSError:
            pass


def prepare(inputs: list[str | Path], out: Path, resume: bool, sku: SkuResolver | None, options: CatalogOptions,
            max_pixels: int) -> tuple[str, list[Entry], list[dict]]:
    """-> (run id, entries still to do, the rows of this run written before (resume))."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clean_stray_parts(out)
    manifest = Manifest(out / "manifest.jsonl")
    old = manifest.rows()
    taken = {(r["sku"], Path(p).name.rsplit("_", 1)[0]): r["input"] for r in old for p in r.get("outputs", {}).values()
             if Path(p).name.endswith("_matte.png")}
    paths = imageio.list_images([str(i) for i in inputs])
    entries = validate(paths, sku, options.min_side, max_pixels, taken=taken)
    run_id = ""
    previous: list[dict] = []
    if resume and old:
        run_id = old[-1]["run"]
        previous = [r for r in old if r["run"] == run_id]
        finished = {r["input"] for r in previous}
        entries = [e for e in entries if e.input not in finished]
    return run_id or time.strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6], entries, previous


def run_catalog(inputs: list[str | Path], out: str | Path, engine, model_id: str, options: CatalogOptions | None = None,
                resume: bool = False, sku: SkuResolver | None = None, workers: int = 2,
                on_row: Callable[[dict], None] | None = None, executor: Callable | None = None) -> CatalogReport:
    """Validate, then matte every accepted input not finished yet, rows appended as they finish.
    executor(worker, entries, run_id) -> iterable of rows replaces the local thread pool (Ray)."""
    options = options or CatalogOptions()
    out = Path(out)
    t0 = time.perf_counter()
    run_id, todo, previous = prepare(inputs, out, resume, sku, options, engine.settings.max_pixels)
    manifest = Manifest(out / "manifest.jsonl")
    rows = list(previous)

    def record(row: dict):
        manifest.append(row)
        rows.append(row)
        if on_row:
            on_row(row)

    for e in todo:
        if e.reject is not None:
            record(rejected_row(e, run_id))
    accepted = [e for e in todo if e.reject is None]
    worker = Worker(engine, model_id, out, options)
    run = executor or local_executor(workers)
    for row in run(worker, accepted, run_id):
        record(row)
    seconds = time.perf_counter() - t0
    summary = summarize(run_id, rows, seconds, new_rows=len(rows) - len(previous))
    imageio.atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())
    return CatalogReport(run_id, rows, seconds, manifest.path, summary)


def local_executor(workers: int) -> Callable:
    """Images on a thread pool, at most 2 * workers decoded at once; the model calls of the
    threads meet in the engine's batcher."""

    def run(worker: Worker, entries: list[Entry], run_id: str) -> Iterable[dict]:
        with ThreadPoolExecutor(workers, thread_name_prefix="cvmatte-catalog") as pool:
            pending = []
            for e in entries:
                pending.append(pool.submit(worker, e, run_id))
                while len(pending) >= 2 * workers:
                    yield pending.pop(0).result()
            for f in pending:
                yield f.result()

    return run


def watch_catalog(folder: str | Path, out: str | Path, engine, model_id: str, options: CatalogOptions | None = None,
                  sku: SkuResolver | None = None, poll_s: float = 1.0, idle_exit_s: float | None = None,
                  on_row: Callable[[dict], None] | None = None, workers: int = 2) -> list[dict]:
    """Process files as they arrive: a file is taken once its size and mtime held still for one
    poll (a copy in progress is left alone), and only once: a file replaced later under the same
    name is not taken again (run the catalog for that). Runs until interrupted, or until nothing
    new came for idle_exit_s. Each round resumes the same run, so nothing is done twice."""
    folder = Path(folder)
    seen_sizes: dict[Path, tuple[int, float]] = {}
    handed: set[Path] = set()  # files already given to a round: never hashed or validated again
    rows: list[dict] = []
    last_new = time.monotonic()
    resume = False
    while True:
        stable = []
        for p in imageio.list_images([folder]) if folder.is_dir() else []:
            if p in handed:
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            sig = (st.st_size, st.st_mtime)
            if seen_sizes.get(p) == sig:
                stable.append(p)
            seen_sizes[p] = sig
        handed.update(stable)
        if stable:
            report = run_catalog(stable, out, engine, model_id, options, resume=resume, sku=sku, workers=workers,
                                 on_row=on_row)
            resume = True
            fresh = [r for r in report.rows if r["input"] not in {x["input"] for x in rows}]
            if fresh:
                rows.extend(fresh)
                last_new = time.monotonic()
        if idle_exit_s is not None and time.monotonic() - last_new > idle_exit_s:
            return rows
        time.sleep(poll_s)
