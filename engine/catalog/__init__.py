"""Many images through one path: validate.py (what each file is), runner.py (the per-image
pipeline every front door uses), store.py (alpha cache and manifest), run.py (a run over files:
manifest, summary, resume), watch.py (files as they arrive), ray.py (the images on Ray actors)."""

from .run import RunReport, run_catalog
from .runner import FileSink, MemorySink, Row, Runner
from .validate import Entry, validate

__all__ = ["Entry", "FileSink", "MemorySink", "Row", "RunReport", "Runner", "run_catalog", "validate"]
