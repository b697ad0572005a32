"""`cvmatte serve`: the model loaded once and kept warm, an HTTP API and a bilingual web page.

    GET  /                     the page (Chinese and English): one image, or a batch with progress
    GET  /health               status, model, backend, queue
    GET  /openapi.json         the API description (FastAPI's)
    POST /v1/matte             multipart `file` -> RGBA PNG (output=rgba), alpha PNG (alpha) or a JPEG
                               on a background (output=background; background, canvas, fill, shadow
                               as in `cvmatte matte`; output=white is background=white)
    POST /v1/batch             multipart `file` (many images, or one zip) -> zip of cut-outs
    POST /v1/jobs              the same as a background job -> {"id"}; the page polls it
    GET  /v1/jobs              recent jobs (the page's history)
    GET  /v1/jobs/{id}         progress; GET /v1/jobs/{id}/zip the result

Capacity: `workers` images are matted at once and at most `queue` more wait; a request past that
gets 503 with Retry-After at once, never a crash or an unbounded pile-up. Limits: upload size
(413), pixel count (413), file type by content, not by name (415), unreadable images (422).
Nothing from a request becomes a path: file names only label entries inside the returned zip,
after sanitising. Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from . import Matter
from .engine import imageio, zoo
from .engine.catalog import Entry, MemorySink
from .engine.errors import ImageError, ImageTooLarge
from .engine.outputs import KINDS, OutputSpec, parse_size, plan_stems, safe_name

WEB = Path(__file__).parent / "web"


class Busy(Exception):
    """More requests than workers + queue: refuse now (503) rather than pile up."""


class Gate:
    """At most `workers` at work and `queue` waiting; past that, Busy."""

    def __init__(self, workers: int, queue: int):
        self.workers, self.queue = workers, queue
        self._slots = threading.Semaphore(workers)
        self._lock = threading.Lock()
        self.inside = 0  # working + waiting

    def __enter__(self):
        with self._lock:
            if self.inside >= self.workers + self.queue:
                raise Busy()
            self.inside += 1
        self._slots.acquire()
        return self

    def __exit__(self, *exc):
        self._slots.release()
        with self._lock:
            self.inside -= 1


@dataclass
class Job:
    id: str
    total: int
    names: list[str]
    created: float = field(default_factory=time.time)
    done: int = 0
    failed: list[dict] = field(default_factory=list)
    state: str = "queued"  # queued, running, done, failed
    zip_bytes: bytes | None = None
    seconds: float = 0.0

    def public(self) -> dict:
        return {"id": self.id, "total": self.total, "done": self.done, "failed": self.failed, "state": self.state,
                "created": self.created, "seconds": round(self.seconds, 2), "zip": f"/v1/jobs/{self.id}/zip"
                if self.state == "done" else None}


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

    def __init__(self, model: str = zoo.DEFAULT_MODEL, device: str = "auto", backend: str = "onnxruntime", workers: int = 1,
                 queue: int = 8, max_upload_mb: float = 25.0, max_megapixels: float = 40.0,
                 allow_cpu_fallback: bool = False, refiners: tuple[str, ...] = ("guided", "cvunet-refiner")):
        self.max_upload = int(max_upload_mb * 2 ** 20)
        self.max_pixels = int(max_megapixels * 1e6)
        # One Matter, loaded once at start; tiling and the refiner are chosen per request.
        self.matter = Matter(model, backend, device, allow_cpu_fallback=allow_cpu_fallback, max_pixels=self.max_pixels)
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
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._jobs_lock = threading.Lock()
        self.started = time.time()

    def close(self) -> None:
        self.matter.close()

    def check_upload(self, data: bytes, name: str) -> None:
        if len(data) > self.max_upload:
            raise ImageTooLarge(name, f"upload of {len(data) / 2**20:.1f} MiB is over the {self.max_upload / 2**20:.0f} MiB limit")
        _, (w, h), _ = sniff(data, name)
        if w * h > self.max_pixels:
            raise ImageTooLarge(name, f"{w}x{h} is over the pixel limit of {self.max_pixels / 1e6:.0f} MP")

    def matte_bytes(self, data: bytes, name: str, s: Settings, stem: str | None = None) -> tuple[bytes, str]:
        """-> (encoded output, media type), through the same Runner as every other front door.
        Raises ImageError / ImageTooLarge / Busy."""
        self.check_upload(data, name)
        m = self.matter
        entry = Entry(name, stem=stem or plan_stems([(name, "")])[0], data=data)
        sink = MemorySink()
        with self.gate:
            [row] = list(m.runner(s.spec, sink, tile=s.tile, refiner=s.refiner).run([entry]))
        if not row.ok:  # the file's name is in the error already
            raise ImageError(name, row.error.removeprefix(f"{name}: "))
        return sink.data[name][s.output], KINDS[s.output].media_type

    # --- batches ---------------------------------------------------------------------------------

    def unpack(self, files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """Uploaded files, with a zip expanded into its members (names only, never paths)."""
        out = []
        for name, data in files:
            if data[:4] == b"PK\x03\x04":
                try:
                    with zipfile.ZipFile(io.BytesIO(data)) as zf:
                        total = 0
                        for info in zf.infolist():
                            if info.is_dir():
                                continue
                            total += info.file_size
                            if info.file_size > self.max_upload or total > 20 * self.max_upload:
                                raise ImageTooLarge(name, "zip expands past the upload limit")
                            out.append((Path(info.filename).name, zf.read(info)))
                except zipfile.BadZipFile:
                    raise ImageError(name, "a damaged zip file") from None
            else:
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
                        time.sleep(0.05)  # a batch waits its turn instead of failing
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

    def start_job(self, files: list[tuple[str, bytes]], s: Settings) -> Job:
        files = self.unpack(files)
        job = Job(uuid.uuid4().hex[:12], len(files), [safe_name(n) for n, _ in files])
        with self._jobs_lock:
            self.jobs[job.id] = job
            while len(self.jobs) > 20:  # the history keeps the 20 newest
                self.jobs.popitem(last=False)

        def work():
            job.state = "running"
            try:
                job.zip_bytes = self.run_batch(files, s, job)
                job.state = "done"
            except Exception as e:  # reported on the job, never a dead thread nobody sees
                job.state, job.failed = "failed", job.failed + [{"file": "", "error": f"{type(e).__name__}: {e}"}]

        threading.Thread(target=work, name=f"cvmatte-job-{job.id}", daemon=True).start()
        return job


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="cvmatte", version="0.1", description="Product cut-outs: RGBA PNG with a soft alpha.")

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
            if size is None or not all(16 <= v <= 8000 for v in size):
                raise HTTPException(400, "canvas must be WIDTHxHEIGHT, 16..8000")
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

    async def read_limited(upload: UploadFile) -> bytes:
        data = await upload.read(service.max_upload + 1)
        if len(data) > service.max_upload:
            raise HTTPException(413, f"{safe_name(upload.filename or 'upload')}: over the "
                                     f"{service.max_upload / 2**20:.0f} MiB upload limit")
        return data

    @app.middleware("http")
    async def refuse_huge_bodies(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > 50 * service.max_upload:
            return JSONResponse({"detail": "request body over the upload limit"}, status_code=413)
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/health")
    def health():
        return {"status": "ok", "model": service.model_name, "backend": service.backend, "refiners": service.refiners,
                "working_or_waiting": service.gate.inside, "workers": service.gate.workers,
                "queue": service.gate.queue, "max_upload_mb": service.max_upload / 2 ** 20,
                "max_megapixels": service.max_pixels / 1e6, "uptime_s": round(time.time() - service.started, 1)}

    @app.post("/v1/matte", responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
    async def matte(file: UploadFile = File(...), output: str = Form("rgba"), tile: bool = Form(True),
                    refiner: str = Form("guided"), canvas: str | None = Form(None),
                    background: str | None = Form(None), fill: float = Form(0.8), shadow: bool = Form(False)):
        """One image -> its cut-out: `rgba` PNG, `alpha` PNG or `white` JPEG (optionally on a WxH canvas)."""
        s = settings(tile, refiner, output, canvas, background, fill, shadow)
        data = await read_limited(file)
        name = safe_name(file.filename or "upload")
        try:
            out, media = await run_in_threadpool(service.matte_bytes, data, name, s)
        except Busy:
            raise HTTPException(503, "busy: every worker and queue place is taken; retry shortly",
                                headers={"Retry-After": "1"}) from None
        except (ImageError, ImageTooLarge) as e:
            raise error_status(e) from None
        filename = plan_stems([(name, "")])[0] + KINDS[s.output].suffix
        return Response(out, media_type=media, headers={"Content-Disposition": f'inline; filename="{filename}"'})

    async def gather(files: list[UploadFile]) -> list[tuple[str, bytes]]:
        if not files:
            raise HTTPException(400, "no files")
        out = []
        for f in files:
            out.append((safe_name(f.filename or "upload"), await read_limited(f)))
        try:
            return service.unpack(out)
        except (ImageError, ImageTooLarge) as e:
            raise error_status(e) from None

    @app.post("/v1/batch", responses={200: {"content": {"application/zip": {}}}})
    async def batch(file: list[UploadFile] = File(...), output: str = Form("rgba"), tile: bool = Form(True),
                    refiner: str = Form("guided"), canvas: str | None = Form(None),
                    background: str | None = Form(None), fill: float = Form(0.8), shadow: bool = Form(False)):
        """Many images (or one zip of them) -> a zip of cut-outs, with errors.txt for the bad ones."""
        s = settings(tile, refiner, output, canvas, background, fill, shadow)
        files = await gather(file)
        data = await run_in_threadpool(service.run_batch, files, s)
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="cutouts.zip"'})

    @app.post("/v1/jobs")
    async def new_job(file: list[UploadFile] = File(...), output: str = Form("rgba"), tile: bool = Form(True),
                      refiner: str = Form("guided"), canvas: str | None = Form(None),
                      background: str | None = Form(None), fill: float = Form(0.8), shadow: bool = Form(False)):
        """Start a batch in the background; poll GET /v1/jobs/{id}."""
        s = settings(tile, refiner, output, canvas, background, fill, shadow)
        files = await gather(file)
        return service.start_job(files, s).public()

    @app.get("/v1/jobs")
    def jobs():
        return [j.public() for j in reversed(service.jobs.values())]

    @app.get("/v1/jobs/{job_id}")
    def job(job_id: str):
        j = service.jobs.get(job_id)
        if j is None:
            raise HTTPException(404, "no such job")
        return j.public()

    @app.get("/v1/jobs/{job_id}/zip")
    def job_zip(job_id: str):
        j = service.jobs.get(job_id)
        if j is None or j.zip_bytes is None:
            raise HTTPException(404, "no such finished job")
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
