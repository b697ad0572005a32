"""The FastAPI app over a Service, and `serve`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fastapi import FastAPI, File, Form, Header, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response

from ..engine.errors import ImageError, ImageTooLarge
from ..engine.outputs import KINDS, OutputSpec, parse_size, plan_stems, safe_name

from .admission import TICKET, Admission, Busy, Ticket, busy
from .jobs import Job
from .service import Service, Settings


WEB = Path(__file__).parent.parent / "web"

#: Canvas sides and area the service renders: a 64x64 upload on an 8000x8000 canvas cost 2.7 GB.
CANVAS_SIDE = (16, 8000)
CANVAS_MAX_PIXELS = 16_000_000
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
