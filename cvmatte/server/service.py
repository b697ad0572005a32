"""The loaded model and the work a request asks for; the HTTP layer (app.py) only translates."""

from __future__ import annotations

import io
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import Matter
from ..engine import imageio
from ..engine.catalog import Entry, MemorySink
from ..engine.errors import ImageError, ImageTooLarge
from ..engine.outputs import KINDS, OutputSpec, plan_stems, safe_name

from .admission import BATCH_PATHS, UPLOAD_DEADLINE_S, Busy, Gate, Slots, Ticket
from .jobs import Job, JobStore


def sniff(data: bytes, name: str) -> tuple[str, tuple[int, int], str]:
    """The image's header (format, size, mode), or ImageError (415) when the bytes are no accepted image."""
    if not data:
        raise ImageError(name, "empty upload")
    header = imageio.image_header(data, name)
    if header is None:
        raise ImageError(name, "not an image (checked by content, not by name)")
    fmt = header[0]
    if fmt not in imageio.ACCEPTED_FORMATS:
        raise ImageError(name, f"{fmt} is not accepted (JPEG, PNG, WebP, BMP, TIFF)")
    return header


@dataclass
class Settings:
    """One request's choices: what to write and how to refine."""

    tile: bool = True
    refiner: str = "guided"
    output: str = "rgba"  # a kind of outputs.KINDS: rgba, alpha, background
    spec: OutputSpec = field(default_factory=OutputSpec)


class Service:
    """The loaded model and the work; the HTTP layer (create_app) only translates."""

    def __init__(self, model: str | None = None, device: str = "auto", backend: str = "auto", workers: int = 1,
                 queue: int = 8, max_upload_mb: float = 25.0, max_megapixels: float = 40.0,
                 allow_cpu_fallback: bool = False, refiners: tuple[str, ...] = ("guided", "cvunet-refiner"),
                 batch_slots: int | None = None, job_ttl_s: float = 3600.0, max_jobs: int = 64,
                 max_files: int = 1000, precision: str = "auto", upload_deadline_s: float = UPLOAD_DEADLINE_S):
        self.max_upload = int(max_upload_mb * 2 ** 20)
        self.max_pixels = int(max_megapixels * 1e6)
        self.max_request = 50 * self.max_upload  # the body of a batch or job request
        self.max_expanded = 20 * self.max_upload  # the declared sizes of all zip members of one request
        self.max_files = max_files  # images in one batch or job, zips expanded
        # One Matter, loaded once at start; tiling and the refiner are chosen per request.
        self.matter = Matter(model, backend, device, allow_cpu_fallback=allow_cpu_fallback, max_pixels=self.max_pixels,
                             precision=precision)
        self.refiners = []
        for name in refiners:
            try:
                self.matter.refiner(name)
            except Exception:
                if name == "guided":
                    raise
                continue  # a learned refiner this installation lacks is simply not offered
            self.refiners.append(name)
        self.model_name = self.matter.spec.name
        self.backend = self.matter.backend.describe()
        self.gate = Gate(workers, queue)
        # Bodies of /v1/matte being received at once, bounded apart from the model work they ask
        # for, by the bytes they may hold in memory until admitted (their Content-Length, or the
        # limit when chunked): stalled clients declaring small bodies cost little.
        self.upload_bytes = Slots(8 * self.body_limit("/v1/matte"))
        self.upload_deadline_s = upload_deadline_s
        self.slots = Slots(batch_slots or workers + queue)
        # Model work has threads of its own, as many as admission lets in (requests in the gate,
        # batches and job unpacking in the slots), so nothing waits unseen in a pool's queue and the
        # server's shared thread pool stays free. Jobs run on `workers` threads, in order.
        self.pool = ThreadPoolExecutor(workers + queue + self.slots.capacity, thread_name_prefix="cvmatte-work")
        self.job_pool = ThreadPoolExecutor(workers, thread_name_prefix="cvmatte-job")
        self.jobs = JobStore(job_ttl_s, max_jobs)
        self.started = time.time()

    def close(self) -> None:
        self.job_pool.shutdown(wait=False, cancel_futures=True)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.matter.close()

    def body_limit(self, path: str) -> int:
        """The most bytes a request body to `path` may carry."""
        if path == "/v1/matte":
            return self.max_upload + 2 ** 20  # one image and the form's small fields
        if path in BATCH_PATHS:
            return self.max_request
        return 2 ** 20

    def check_upload(self, data: bytes, name: str) -> None:
        if len(data) > self.max_upload:
            raise ImageTooLarge(name, f"upload of {len(data) / 2**20:.1f} MiB is over the {self.max_upload / 2**20:.0f} MiB limit")
        _, (w, h), _ = sniff(data, name)
        if w * h > self.max_pixels:
            raise ImageTooLarge(name, f"{w}x{h} is over the pixel limit of {self.max_pixels / 1e6:.0f} MP")

    def matte_bytes(self, data: bytes, name: str, s: Settings, stem: str | None = None, *,
                    admitted: bool = False) -> tuple[bytes, str]:
        """-> (encoded output, media type), through the same Runner as every other front door.
        admitted: the caller holds a place in the gate already (an HTTP request, from its arrival).
        Raises ImageError / ImageTooLarge / Busy."""
        self.check_upload(data, name)
        m = self.matter
        entry = Entry(name, stem=stem or plan_stems([(name, "")])[0], data=data)
        sink = MemorySink()
        # Decoding, matting and rendering (a canvas included) all happen inside the worker limit.
        with self.gate.working() if admitted else self.gate:
            [row] = list(m.runner(s.spec, sink, tile=s.tile, refiner=s.refiner).run([entry]))
        if not row.ok:  # the file's name is in the error already
            raise ImageError(name, row.error.removeprefix(f"{name}: "))
        return sink.data[name][s.output], KINDS[s.output].media_type

    # --- batches ---------------------------------------------------------------------------------

    def unpack(self, files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """Uploaded files, with each zip expanded into its members (names only, never paths).

        A zip bomb costs nothing: the declared sizes of every member of every zip in the request
        are added up before any member is read (past max_expanded, 413), and no member is read past
        its declared size (headers can lie; a member longer than it says fails its CRC: 422).
        Only stored and deflated members: bzip2 and LZMA decompress without an output bound."""
        plan: list[tuple[str, bytes | None, tuple[str, zipfile.ZipFile, zipfile.ZipInfo] | None]] = []
        declared = 0
        for name, data in files:
            if data[:4] != b"PK\x03\x04":
                plan.append((name, data, None))
                continue
            try:
                zf = zipfile.ZipFile(io.BytesIO(data))
            except (zipfile.BadZipFile, ValueError, EOFError):
                raise ImageError(name, "a damaged zip file") from None
            for info in zf.infolist():
                if info.is_dir():
                    continue
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise ImageError(name, "zip members must be stored or deflated")
                if info.file_size > self.max_upload:
                    raise ImageTooLarge(name, f"{safe_name(info.filename)} expands past the "
                                              f"{self.max_upload / 2**20:.0f} MiB upload limit")
                declared += info.file_size
                plan.append((Path(info.filename).name, None, (name, zf, info)))
            if len(plan) > self.max_files:
                break
        if len(plan) > self.max_files:
            raise ImageTooLarge("request", f"more than {self.max_files} images in one request")
        if declared > self.max_expanded:
            raise ImageTooLarge("request", f"zips expand to {declared / 2**20:.0f} MiB, over the "
                                           f"{self.max_expanded / 2**20:.0f} MiB one request may expand to")
        out = []
        for name, data, member in plan:
            if member is not None:
                zip_name, zf, info = member
                try:
                    with zf.open(info) as f:
                        data = f.read(info.file_size + 1)  # bounded, whatever the stream holds
                except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, RuntimeError):  # RuntimeError: encrypted
                    raise ImageError(zip_name, f"a damaged zip file ({safe_name(info.filename)})") from None
                if len(data) > info.file_size:  # zipfile stops at the declared size itself; kept as a guard
                    raise ImageError(zip_name, "a zip member longer than its header says")
            out.append((name, data))
        return out

    def run_batch(self, files: list[tuple[str, bytes]], s: Settings, job: Job | None = None) -> bytes:
        """Every image to a PNG in one zip; a bad one becomes a line in errors.txt, the rest go on."""
        t0 = time.perf_counter()
        buf = io.BytesIO()
        errors = []
        # The one name planner: a.jpg and a.png become a_matte.png and a_png_matte.png.
        stems = plan_stems([(f"{i}/{name}", "") for i, (name, _) in enumerate(files)])
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
            for (name, data), stem in zip(files, stems):
                while True:
                    try:
                        out, _ = self.matte_bytes(data, name, s, stem)
                        zf.writestr(stem + KINDS[s.output].suffix, out)
                        break
                    except Busy:
                        time.sleep(0.05)  # an admitted batch waits its turn for a worker instead of failing
                    except (ImageError, ImageTooLarge) as e:
                        errors.append({"file": safe_name(name), "error": e.reason if hasattr(e, "reason") else str(e)})
                        break
                if job:
                    job.done += 1
                    job.failed = errors
            if errors:
                zf.writestr("errors.txt", "".join(f"{e['file']}: {e['error']}\n" for e in errors))
        if job:
            job.seconds = time.perf_counter() - t0
        return buf.getvalue()

    def batch(self, files: list[tuple[str, bytes]], s: Settings) -> bytes:
        return self.run_batch(self.unpack(files), s)

    def start_job(self, files: list[tuple[str, bytes]], s: Settings, ticket: Ticket | None = None) -> Job:
        """files: unpacked already. The job holds `ticket` (its batch slot) until it finishes.
        Raises Busy when the job store is full of jobs nobody has fetched yet."""
        job = Job(len(files), [safe_name(n) for n, _ in files])
        self.jobs.add(job)

        def work():
            job.state = "running"
            try:
                job.zip_bytes = self.run_batch(files, s, job)
                job.state = "done"
            except Exception as e:  # reported on the job, never a dead thread nobody sees
                job.state, job.failed = "failed", job.failed + [{"file": "", "error": f"{type(e).__name__}: {e}"}]
            finally:
                job.finished = time.time()
                if ticket is not None:
                    ticket.release()

        if ticket is not None:
            ticket.handed_over = True
        self.job_pool.submit(work)
        return job
