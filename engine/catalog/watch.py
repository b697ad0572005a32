"""`catalog run --watch`: files processed as they arrive, told by the file system's events
(watchdog: inotify, FSEvents, ReadDirectoryChangesW) instead of listing the folder over and over.

A file is taken once no event came for it for `settle_s` (a copy in progress keeps sending them).
Once done it is taken again only when its contents change (a new photo copied over it under the
same name: its size or modification time differ from the version cut out); a file that failed (a
copy that stalled longer than settle_s reads as truncated) is taken again when it changes again.
Each batch resumes the same run, so nothing is done twice.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from .. import imageio
from .run import RunReport
from .runner import Row


def _version(path: Path) -> tuple[int, int] | None:
    """What tells one version of a file from the next without reading it: size and mtime."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def watch_catalog(folder: str | Path, run: Callable[[list[Path], bool], RunReport], settle_s: float = 1.0,
                  idle_exit_s: float | None = None) -> list[Row]:
    """run(paths, resume) runs the catalog on the files that arrived. Runs until interrupted, or
    until nothing new came for idle_exit_s; returns the rows it produced."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    folder = Path(folder)
    lock = threading.Lock()
    last_event: dict[Path, float] = {}

    def touched(path) -> None:
        p = Path(path)
        if p.suffix.lower() in imageio.IMAGE_SUFFIXES and not p.name.startswith("."):
            with lock:
                last_event[p] = time.monotonic()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            if not event.is_directory:
                touched(event.src_path)
                if getattr(event, "dest_path", ""):
                    touched(event.dest_path)

    observer = Observer()
    observer.schedule(Handler(), str(folder), recursive=True)
    observer.start()
    for p in imageio.list_images([folder]):  # what is there already counts as arrived now
        touched(p)
    done: dict[str, tuple[int, int] | None] = {}  # input cut out (ok or review) -> the version it was
    rows: dict[str, Row] = {}  # input -> its latest row
    resume = False
    last_new = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            with lock:
                settled = sorted(p for p, t in last_event.items() if now - t >= settle_s)
                for p in settled:
                    del last_event[p]
            versions = {str(p): _version(p) for p in settled}
            settled = [p for p in settled if p.is_file() and done.get(str(p), ()) != versions[str(p)]]
            if settled:
                report = run(settled, resume)
                resume = True
                wanted = {str(p) for p in settled}
                for r in report.rows:
                    if r.input in wanted:
                        rows[r.input] = r
                        if r.ok:
                            done[r.input] = versions[r.input]
                last_new = time.monotonic()
            if idle_exit_s is not None and time.monotonic() - last_new > idle_exit_s:
                return list(rows.values())
            time.sleep(min(settle_s, 0.5))
    finally:
        observer.stop()
        observer.join()
