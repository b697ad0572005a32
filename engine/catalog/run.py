"""A run over many files: validate and classify every input, matte what is new (runner.py), write
standard outputs, a manifest row per input and a summary; resumable, safe to share an output folder.

    SkuLayout (catalog run)             OUT/<SKU>/<stem>_matte.png (+ _alpha.png, _background.jpg)
                                        OUT/manifest.jsonl, OUT/summary.json, OUT/.cache/
    DatedLayout (cvmatte matte)         OUT/YYYYMMDD/HHMMSS_<SKU>/<stem>_matte.png ...
                                        OUT/YYYYMMDD/HHMMSS_manifest.jsonl, ..._summary.json

The cache holds the final alpha per (file bytes, model, settings): a re-run does no model work and
gives the same bytes. Safety: every output and cache file is written to a temporary file and
renamed; a manifest row is appended under a lock, in one write, only after the image's outputs
exist. So a `kill -9` leaves at worst an image whose outputs exist without its row (redone, from
the cache, by `--resume`) and a stray temporary file (removed by the next catalog run); two runs
writing into one folder interleave whole rows and whole files, never parts of them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .. import imageio, outputs
from ..batching import BatchStats
from ..errors import CvmatteError
from ..matting import MattingEngine
from ..quality import QualityThresholds
from ..refiners import TileRefiner
from ..settings import MatteSettings
from .runner import FileSink, Row, Runner
from .store import AlphaCache, Manifest, NameClaims, WorkClaims
from .validate import Entry, validate

#: executor(runner, entries) -> rows: where the images run (default: runner.run, on this machine).
Executor = Callable[[Runner, list[Entry]], Iterable[Row]]


@dataclass
class RunReport:
    run_id: str
    rows: list[Row]
    seconds: float
    manifest: Path
    summary: dict
    #: The coarse pass's batches (over the engine's life): fill, part-filled launches, busy share.
    batching: BatchStats | None = None

    def by_status(self, status: str) -> list[Row]:
        return [r for r in self.rows if r.status == status]

    @property
    def succeeded(self) -> list[Row]:
        return [r for r in self.rows if r.ok]

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if not r.ok]


def _cache_in(root: Path) -> AlphaCache | None:
    """The run's alpha cache, or none where something else holds its place (the cache only saves
    time: a run goes on without it rather than failing every image)."""
    folder = root / ".cache"
    if folder.exists() and not folder.is_dir():
        logging.getLogger(__name__).warning("%s is not a folder: this run goes without the alpha cache", folder)
        return None
    return AlphaCache(folder)


def summarize(run_id: str, rows: list[Row], seconds: float, new_rows: int | None = None) -> dict:
    """new_rows: how many of the rows this invocation produced (a resumed run's earlier rows do
    not count towards its images/s)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    fresh = rows if new_rows is None else rows[len(rows) - new_rows:]
    return {
        "run": run_id, "inputs": len(rows), "counts": counts,
        "cache_hits": sum(r.cache == "hit" for r in rows),
        # Through the model: a cache miss, or without a cache every row that has a coarse pass's time.
        "model_runs": sum(r.cache == "miss" or (r.cache is None and "coarse_s" in r.timings) for r in rows),
        "duplicates": sum(bool(r.duplicate_of) for r in rows),
        "failures": [{"input": r.input, "error": r.error} for r in rows if not r.ok],
        "review": [{"input": r.input, "flags": r.flags, "outputs": r.outputs} for r in rows if r.status == "review"],
        "seconds": seconds, "images_per_s": sum(r.ok for r in fresh) / seconds if seconds > 0 else 0.0,
    }


def _clean_stray_parts(out: Path) -> None:
    """Temporary files whose writer is gone (a killed run); a live run's are left alone."""
    for p in Path(out).rglob(".*.part"):
        if imageio.stray_part(p):
            p.unlink(missing_ok=True)


def run_catalog(inputs: list[str | Path], engine: MattingEngine, layout: outputs.SkuLayout,
                spec: outputs.OutputSpec | None = None, *, model_id: str = "", backend_name: str = "",
                cache: bool = True, resume: bool = False, retry_failed: bool = True,
                sku: outputs.SkuResolver | None = None, min_side: int = 32,
                thresholds: QualityThresholds | None = None, settings: MatteSettings | None = None,
                refiner: TileRefiner | None = None, on_row: Callable[[Row], None] | None = None,
                on_start: Callable[[int], None] | None = None, executor: Executor | None = None,
                runner_class: Callable[..., Runner] = Runner) -> RunReport:
    """Validate, then matte every accepted input not finished yet, rows appended as they finish.
    cache: keep alphas under OUT/.cache (a catalog), or not (`cvmatte matte`); resume: finish the
    manifest's last run instead of starting a new one (retry_failed: its failed inputs too). The
    output folder is never read as input; output names are claimed (store.NameClaims).
    runner_class: Runner, or engine.gpu.runner.GpuRunner (bound to its backend) for the device path."""
    t0 = time.perf_counter()
    spec = spec or outputs.OutputSpec()
    settings = settings or engine.settings
    layout.root.mkdir(parents=True, exist_ok=True)
    if cache:
        _clean_stray_parts(layout.root)
    manifest = Manifest(layout.manifest)
    skipped: list[Path] = []
    paths = imageio.list_images([str(i) for i in inputs], skipped, exclude=[layout.root])
    root = imageio.resolved_path(layout.root)
    if not paths and inputs and all(imageio.resolved_path(Path(i)).is_relative_to(root) for i in inputs):
        raise CvmatteError(f"every input is inside the output folder {layout.root}, whose files are never inputs: "
                           "give an output folder outside the inputs")
    entries = validate(paths, sku, min_side, settings.max_pixels)
    read_from = manifest.size()  # rows appended from here on may be another invocation's (WorkClaims)
    old = manifest.rows() if resume else []
    run_id, previous = "", []
    if old:
        # Resume: the manifest's last run goes on; inputs are matched on their resolved path, so
        # any spelling resumes; failed and rejected inputs are tried again unless retry_failed=False.
        run_id = old[-1]["run"]
        latest = {r.identity: r for r in (Row.from_dict(d) for d in old if d["run"] == run_id)}
        now = {e.path: e.sha256 for e in entries}

        def still_done(i: str, r: Row) -> bool:
            """Done, and still so: its outputs are there and the input is the file that made them
            (a cut-out deleted, or a photo replaced under the same name, is done again)."""
            return (r.ok and (not r.sha256 or now.get(i) in (None, r.sha256))
                    and all(Path(p).is_file() for p in (r.outputs or {}).values()))

        done = {i for i, r in latest.items() if still_done(i, r) or (not r.ok and not retry_failed)}
        todo = {e.path for e in entries} - done
        previous = [r for i, r in latest.items() if i not in todo]
        entries = [e for e in entries if e.path not in done]
    run_id = run_id or time.strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6]
    claims = NameClaims(layout.root)
    try:
        for e in entries:
            if e.reject is None:
                e.stem = claims.claim(layout.folder(e.sku), outputs.stem_candidates(e.input), e.path)
    except OSError as err:  # a full or read-only output disk, before any image is cut out
        raise CvmatteError(f"cannot reserve output names under {layout.root} ({err.strerror or err})") from None
    rows = list(previous)
    if on_start:
        on_start(len(entries))

    def record(row: Row):
        try:
            manifest.append(row.to_dict())
        except OSError as err:  # a full disk: no run can go on without its record
            raise CvmatteError(f"cannot write the manifest {manifest.path} ({err.strerror or err}); "
                               "the outputs written so far are kept, --resume finishes the run") from None
        rows.append(row)
        if on_row:
            on_row(row)

    work = WorkClaims(layout.root, run_id, manifest, read_from)
    try:
        for e in entries:
            if e.reject is not None and work.take(e.path):
                record(Row(e.input, e.sha256, e.sku, e.path, status="rejected", error=e.reject, run=run_id))
                work.done(e.path)
        # Taken lazily, as the runner admits them: another invocation of this run may take the rest.
        accepted = (e for e in entries if e.reject is None and work.take(e.path))
        runner = runner_class(engine, spec, FileSink(layout), model_id=model_id, backend_name=backend_name,
                              run_id=run_id, cache=_cache_in(layout.root) if cache else None,
                              thresholds=thresholds, settings=settings, refiner=refiner)
        for row in (executor or type(runner).run)(runner, accepted):
            record(row)
            work.done(row.identity)
    finally:
        work.close()
    seconds = time.perf_counter() - t0
    summary = summarize(run_id, rows, seconds, new_rows=len(rows) - len(previous))
    summary["skipped"] = [str(p) for p in skipped]
    imageio.atomic_write_bytes(layout.summary, json.dumps(summary, indent=1).encode())
    return RunReport(run_id, rows, seconds, manifest.path, summary, getattr(engine.backend, "stats", None))
