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

from .admission import BATCH_PATHS, TICKET, UPLOAD_DEADLINE_S, Admission, Busy, Gate, Slots, Ticket
from .app import create_app, serve
from .jobs import Job, JobStore
from .service import Service, Settings, sniff

__all__ = ["Admission", "BATCH_PATHS", "Busy", "Gate", "Job", "JobStore", "Service", "Settings", "Slots", "TICKET",
           "Ticket", "UPLOAD_DEADLINE_S", "create_app", "serve", "sniff"]
