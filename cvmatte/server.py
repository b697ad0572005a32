"""`cvmatte serve`: the model loaded once and kept warm, an HTTP API and a bilingual web page.

    GET  /                     the page (Chinese and English): one image, or a batch with progress
    GET  /health               status, model, backend, load
    GET  /openapi.json         the API description (FastAPI's)
    POST /v1/matte             multipart `file` -> RGBA PNG (output=rgba), alpha PNG (alpha) or a JPEG
                               on a background (output=background; background, canvas, fill, shadow
                               as in `cvmatte matte`; output=white is background=white)
    POST /v1/batch             multipart `file` (many images, or zips of them) -> zip of cut-outs
    POST /v1/jobs              the same as a background job -> {"id", "token", ...}; the page polls it
    GET  /v1/jobs/{id}         progress; GET /v1/jobs/{id}/zip the result. Both need the job's token
                               (`?token=` or the header X-Job-Token); without it, 404

Capacity: a /v1/matte body is read first, whole, within 30 s (else 408), the bodies being received
bounded by the bytes they declare (8 upload limits in all; past that 503); only then does the
request ask the gate: `workers` images are matted at once and at most `queue` more
wait, so clients that stall mid-upload cannot take the model's places. At most `batch_slots`
batches and jobs are in the house at once, from their arrival (a job holds its slot until it
finishes). Past any bound, 503 with Retry-After at once, never a crash or an unbounded pile-up. Model work runs on the service's own bounded thread pools,
so /health (async, on the event loop) answers whatever the load.

Limits: the request body, counted while it streams (413 as soon as it passes: one upload and its
form for /v1/matte, 50 times the upload limit for the batch endpoints), each upload's size (413),
the declared sizes of all zip members of one request together (20 times the upload limit; 413
before any member is read), pixel count (413), canvas area (16 MP, 400), file type by content, not
by name (415), unreadable images (422). A job is kept until an hour after it finishes, never
dropped while it runs or before its zip is fetched; past 64 kept, new jobs get 503.
Nothing from a request becomes a path: file names only label entries inside the returned zip,
after sanitising. Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import secrets
import threading
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, File, Form, Header, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response

from . import Matter
from .engine import imageio, zoo
from .engine.catalog import Entry, MemorySink
from .engine.errors import ImageError, ImageTooLarge
from .engine.outputs import KINDS, OutputSpec, parse_size, plan_stems, safe_name

WEB = Path(__file__).parent / "web"

#: Canvas sides and area the service renders: a 64x64 upload on an 8000x8000 canvas cost 2.7 GB.
CANVAS_SIDE = (16, 8000)
CANVAS_MAX_PIXELS = 16_000_000
#: Endpoints whose requests take a batch slot (many images each).
BATCH_PATHS = ("/v1/batch", "/v1/jobs")
#: The scope key under which a request's admission ticket travels from the middleware to the handler.
TICKET = "cvmatte.ticket"
#: Seconds a /v1/matte request may take to send its body; a client that stalls longer gets 408.
UPLOAD_DEADLINE_S = 30.0


class Busy(Exception):
    """More requests than capacity: refuse now (503) rather than pile up."""


class Gate:
    """At most `workers` at work and `queue` waiting; past that, Busy."""

    def __init__(self, workers: int, queue: int):
        self.workers, self.queue = workers, queue
        self._slots = threading.Semaphore(workers)
        self._lock = threading.Lock()
        self.inside = 0  # working + waiting (a /v1/matte request once its whole body has arrived)

    def admit(self) -> None:
        """Count one more inside, or Busy; `leave` when done."""
        with self._lock:
            if self.inside >= self.workers + self.queue:
                raise Busy()
            self.inside += 1

    def leave(self) -> None:
        with self._lock:
            self.inside -= 1

    def working(self):
        """The worker semaphore, for one admitted already (waits its turn)."""
        return self._slots

    def __enter__(self):
        self.admit()
        self._slots.acquire()
        return self

    def __exit__(self, *exc):
        self._slots.release()
        self.leave()


class Slots:
    """At most `capacity` in the house (batch and job requests; bytes of uploads); past that, Busy."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int = 1) -> None:
        with self._lock:
            if self.used + n > self.capacity:
                raise Busy()
            self.used += n

    def give(self, n: int = 1) -> None:
        with self._lock:
            self.used -= n


class Ticket:
    """One admitted request's place (in the gate or a batch slot), given back exactly once: by the
    handler when its work is done, by the middleware when the request ends otherwise (an error, a
    refusal), or by the job it was handed to when the job finishes."""

    def __init__(self, give_back):
        self._give_back = give_back
        self._lock = threading.Lock()
        self.held = True
        self.handed_over = False  # a job owns it now: the middleware leaves it alone

    def release(self) -> None:
        with self._lock:
            if not self.held:
                return
            self.held = False
        self._give_back()


@dataclass
class Job:
    total: int
    names: list[str]
    # Unguessable: a job is read with its id and its token, given only to whoever created it.
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    created: float = field(default_factory=time.time)
    done: int = 0
    failed: list[dict] = field(default_factory=list)
    state: str = "queued"  # queued, running, done, failed
    zip_bytes: bytes | None = None
    seconds: float = 0.0
    finished: float | None = None  # time.time() when done or failed
    fetched: bool = False  # its zip was downloaded at least once

    def public(self) -> dict:
        """What a token holder sees (the zip link carries the token, for a plain <a href>)."""
        return {"id": self.id, "total": self.total, "done": self.done, "failed": self.failed, "state": self.state,
                "created": self.created, "seconds": round(self.seconds, 2),
                "zip": f"/v1/jobs/{self.id}/zip?token={self.token}" if self.state == "done" else None}


class JobStore:
    """Jobs by id, each readable only with its token. A job is kept until `ttl` seconds after it
    finishes; past `max_jobs` kept, finished jobs whose zip was fetched go first (oldest first), and
    when every kept job is running, waiting or unfetched a new one is refused (Busy) rather than an
    unfetched one dropped: a client never loses a job it has not read yet."""

    def __init__(self, ttl: float = 3600.0, max_jobs: int = 64, clock=time.time):
        self.ttl, self.max_jobs, self.clock = ttl, max_jobs, clock
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._jobs)

    def _expire(self) -> None:
        now = self.clock()
        for j in list(self._jobs.values()):
            if j.finished is not None and now - j.finished > self.ttl:
                del self._jobs[j.id]

    def add(self, job: Job) -> None:
        with self._lock:
            self._expire()
            for j in list(self._jobs.values()):  # oldest first: dicts keep insertion order
                if len(self._jobs) < self.max_jobs:
                    break
                if j.fetched:
                    del self._jobs[j.id]
            if len(self._jobs) >= self.max_jobs:
                raise Busy()
            self._jobs[job.id] = job

    def get(self, job_id: str, token: str | None) -> Job | None:
        """The job, or None when there is none or the token is not its own (the same answer, so
        an id alone tells nothing)."""
        with self._lock:
            self._expire()
            job = self._jobs.get(job_id)
        if job is None or not token or not hmac.compare_digest(job.token.encode(), token.encode()):
            return None
        return job


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

    def __init__(self, model: str = zoo.DEFAULT_MODEL, device: str = "auto", backend: str = "auto", workers: int = 1,
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


def busy(what: str) -> HTTPException:
    return HTTPException(503, f"busy: {what}; retry shortly", headers={"Retry-After": "1"})


class Admission:
    """A pure ASGI middleware: admission and the body limit, decided before and while the body is
    read (an `@app.middleware("http")` one only runs after the body has been spooled whole).

    - POST /v1/matte takes a place in the gate, /v1/batch and /v1/jobs a batch slot, when the request
      comes in: past capacity, 503 with Retry-After before a byte of the body is read.
    - The body is counted as it streams (chunked uploads have no Content-Length): past the path's
      limit, 413 at once and the connection is closed; the rest of the body is never read."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service

    @staticmethod
    async def refuse(send, status: int, detail: str, retry: bool = False) -> None:
        body = json.dumps({"detail": detail}).encode()
        # Connection: close: whatever is left of the request's body is not wanted.
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        if retry:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def read_body(self, receive, send, limit: int) -> list[dict] | None:
        """A /v1/matte body, whole, within UPLOAD_DEADLINE_S and the limit: its messages to replay,
        or None once the client was answered (408, 413) or has gone."""
        messages, seen = [], 0
        try:
            async with asyncio.timeout(self.service.upload_deadline_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return None  # the client went away
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        await self.refuse(send, 413, f"request body over the {limit / 2**20:.0f} MiB limit")
                        return None
                    messages.append(message)
                    if not message.get("more_body", False):
                        return messages
        except TimeoutError:
            await self.refuse(send, 408, f"request body not received within {self.service.upload_deadline_s:g} s")
            return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        service, path = self.service, scope["path"]
        limit = service.body_limit(path)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await self.refuse(send, 413, f"request body over the {limit / 2**20:.0f} MiB limit")
        ticket = None
        if scope["method"] == "POST" and path == "/v1/matte":
            # The upload first, with a place of its own among uploads and a deadline; the gate that
            # guards model work counts only requests whose body is in: clients that send a few
            # bytes and stall cannot take the model's places from everyone else.
            held = int(length) if length.isdigit() else limit
            try:
                service.upload_bytes.take(held)
            except Busy:
                return await self.refuse(send, 503, "busy: too many uploads at once; retry shortly", retry=True)
            try:
                body = await self.read_body(receive, send, limit)
            finally:
                service.upload_bytes.give(held)
            if body is None:
                return
            try:
                service.gate.admit()
            except Busy:
                return await self.refuse(send, 503, "busy: every worker and queue place is taken; retry shortly",
                                         retry=True)
            ticket = scope[TICKET] = Ticket(service.gate.leave)
            receive = _replay(body, receive)
        elif scope["method"] == "POST" and path in BATCH_PATHS:
            # Batch bodies may be large (spooled to disk by the form parser): a slot from arrival.
            try:
                service.slots.take()
            except Busy:
                return await self.refuse(send, 503, "busy: every batch place is taken; retry shortly", retry=True)
            ticket = scope[TICKET] = Ticket(service.slots.give)

        seen, refused, started = 0, False, False

        async def counting_receive():
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not started:
                    # Answer now; the app sees a client gone and its own answer is dropped.
                    refused = True
                    await self.refuse(send, 413, f"request body over the {limit / 2**20:.0f} MiB limit")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        finally:
            if ticket is not None and not ticket.handed_over:
                ticket.release()


def _replay(messages: list[dict], receive):
    """A receive that gives the body already read, then whatever the client sends next."""
    pending = list(messages)

    async def replay():
        return pending.pop(0) if pending else await receive()

    return replay


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="cvmatte", version="0.1", description="Product cut-outs: RGBA PNG with a soft alpha.")
    app.add_middleware(Admission, service=service)

    def settings(tile: bool, refiner: str, output: str, canvas: str | None, background: str | None, fill: float,
                 shadow: bool) -> Settings:
        if output == "white":  # the name of earlier releases
            output, background = "background", background or "white"
        if output not in KINDS:
            raise HTTPException(400, f"output must be one of {', '.join(KINDS)} (or white)")
        if refiner not in service.refiners:
            raise HTTPException(400, f"refiner must be one of {', '.join(service.refiners)}")
        size = None
        if canvas:
            try:
                size = parse_size(canvas)
            except ValueError:
                size = None
            lo, hi = CANVAS_SIDE
            if size is None or not all(lo <= v <= hi for v in size) or size[0] * size[1] > CANVAS_MAX_PIXELS:
                raise HTTPException(400, f"canvas must be WIDTHxHEIGHT, each side {lo}..{hi}, at most "
                                         f"{CANVAS_MAX_PIXELS / 1e6:.0f} megapixels (e.g. 4000x4000)")
        if background and background.startswith("image:"):
            raise HTTPException(400, "background image:PATH is not offered by the service (no paths from requests)")
        try:
            spec = OutputSpec(rgba=output == "rgba", alpha=output == "alpha",
                              background=(background or "white") if output == "background" else None,
                              canvas=size, fill=fill, shadow=shadow)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return Settings(tile, refiner, output, spec)

    def error_status(e: Exception) -> HTTPException:
        if isinstance(e, ImageTooLarge):
            return HTTPException(413, str(e))
        if isinstance(e, ImageError) and ("not an image" in e.reason or "not accepted" in e.reason
                                          or "empty upload" in e.reason):
            return HTTPException(415, str(e))
        return HTTPException(422, str(e))

    async def in_pool(fn, *args, **kwargs):
        """Model work on the service's own threads, never the server's shared pool."""
        return await asyncio.get_running_loop().run_in_executor(service.pool, lambda: fn(*args, **kwargs))

    async def read_limited(upload: UploadFile) -> bytes:
        data = await upload.read(service.max_upload + 1)
        if len(data) > service.max_upload:
            raise HTTPException(413, f"{safe_name(upload.filename or 'upload')}: over the "
                                     f"{service.max_upload / 2**20:.0f} MiB upload limit")
        return data

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/health")
    async def health():
        """On the event loop, no thread needed: it answers while every worker is busy."""
        return {"status": "ok", "model": service.model_name, "backend": service.backend, "refiners": service.refiners,
                "working_or_waiting": service.gate.inside, "workers": service.gate.workers,
                "queue": service.gate.queue, "batches": service.slots.used, "batch_slots": service.slots.capacity,
                "jobs_kept": len(service.jobs), "max_upload_mb": service.max_upload / 2 ** 20,
                "max_megapixels": service.max_pixels / 1e6, "uptime_s": round(time.time() - service.started, 1)}

    @app.post("/v1/matte", responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
    async def matte(request: Request, file: UploadFile = File(...), output: str = Form("rgba"), tile: bool = Form(True),
                    refiner: str = Form("guided"), canvas: str | None = Form(None),
                    background: str | None = Form(None), fill: float = Form(0.8), shadow: bool = Form(False)):
        """One image -> its cut-out: `rgba` PNG, `alpha` PNG or `white` JPEG (optionally on a WxH canvas)."""
        s = settings(tile, refiner, output, canvas, background, fill, shadow)
        data = await read_limited(file)
        name = safe_name(file.filename or "upload")
        ticket: Ticket = request.scope[TICKET]  # the gate place the middleware took at arrival
        try:
            out, media = await in_pool(service.matte_bytes, data, name, s, admitted=True)
        except (ImageError, ImageTooLarge) as e:
            raise error_status(e) from None
        finally:
            ticket.release()
        filename = plan_stems([(name, "")])[0] + KINDS[s.output].suffix
        return Response(out, media_type=media, headers={"Content-Disposition": f'inline; filename="{filename}"'})

    async def gather(files: list[UploadFile]) -> list[tuple[str, bytes]]:
        if not files:
            raise HTTPException(400, "no files")
        return [(safe_name(f.filename or "upload"), await read_limited(f)) for f in files]

    @app.post("/v1/batch", responses={200: {"content": {"application/zip": {}}}})
    async def batch(request: Request, file: list[UploadFile] = File(...), output: str = Form("rgba"),
                    tile: bool = Form(True), refiner: str = Form("guided"), canvas: str | None = Form(None),
                    background: str | None = Form(None), fill: float = Form(0.8), shadow: bool = Form(False)):
        """Many images (or zips of them) -> a zip of cut-outs, with errors.txt for the bad ones."""
        s = settings(tile, refiner, output, canvas, background, fill, shadow)
        files = await gather(file)
        try:
            data = await in_pool(service.batch, files, s)
        except (ImageError, ImageTooLarge) as e:
            raise error_status(e) from None
        finally:
            request.scope[TICKET].release()  # the batch slot
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="cutouts.zip"'})

    @app.post("/v1/jobs")
    async def new_job(request: Request, file: list[UploadFile] = File(...), output: str = Form("rgba"),
                      tile: bool = Form(True), refiner: str = Form("guided"), canvas: str | None = Form(None),
                      background: str | None = Form(None), fill: float = Form(0.8), shadow: bool = Form(False)):
        """Start a batch in the background -> {"id", "token", ...}; poll GET /v1/jobs/{id} with the token."""
        s = settings(tile, refiner, output, canvas, background, fill, shadow)
        files = await gather(file)
        try:
            files = await in_pool(service.unpack, files)
            job = service.start_job(files, s, request.scope[TICKET])  # the job keeps the slot
        except Busy:
            raise busy("too many finished jobs nobody has fetched yet") from None
        except (ImageError, ImageTooLarge) as e:
            raise error_status(e) from None
        return {**job.public(), "token": job.token}

    def find(job_id: str, token: str | None, header: str | None) -> Job:
        j = service.jobs.get(job_id, token or header)
        if j is None:
            raise HTTPException(404, "no such job (or not your token; jobs expire an hour after they finish)")
        return j

    @app.get("/v1/jobs/{job_id}")
    async def job(job_id: str, token: str | None = Query(None), x_job_token: str | None = Header(None)):
        """A job's progress; needs the token POST /v1/jobs returned (?token= or X-Job-Token)."""
        return find(job_id, token, x_job_token).public()

    @app.get("/v1/jobs/{job_id}/zip")
    async def job_zip(job_id: str, token: str | None = Query(None), x_job_token: str | None = Header(None)):
        j = find(job_id, token, x_job_token)
        if j.zip_bytes is None:
            raise HTTPException(404, "the job has not finished")
        j.fetched = True
        return Response(j.zip_bytes, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="cutouts-{j.id}.zip"'})

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, **service_kwargs) -> None:
    import uvicorn

    service = Service(**service_kwargs)
    try:
        uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
    finally:
        service.close()
