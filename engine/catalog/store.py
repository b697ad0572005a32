"""What a catalog keeps between runs: the alpha cache and the manifest.

Both are safe to share between processes: cache entries are written to a temporary file and
renamed (the JSON last: it is the entry's commit mark), and a manifest row is appended whole under
an exclusive lock (flock on the manifest itself; on Windows filelock's lock file beside it).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from .. import imageio
from ..settings import MatteSettings

#: Settings that do not change the alpha (speed only) and so do not enter the cache key.
_SPEED_ONLY = {"batch_size", "io_workers", "max_inflight", "flush_ms", "ring_depth", "tile_batch", "max_pixels",
               "max_memory_mb"}


def settings_digest(settings: MatteSettings, refiner_name: str) -> str:
    d = {k: v for k, v in asdict(settings).items() if k not in _SPEED_ONLY}
    d["refiner"] = refiner_name
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


class AlphaCache:
    """Final alphas keyed by sha256(file bytes) + model name and sha256 + settings."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def key(self, file_sha256: str, model_id: str, settings_digest: str) -> str:
        return hashlib.sha256(f"{file_sha256}|{model_id}|{settings_digest}".encode()).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        d = self.folder / key[:2]
        return d / f"{key}.png", d / f"{key}.json"

    def get(self, key: str) -> tuple[np.ndarray, dict] | None:
        """-> (alpha uint8 [H, W], record) or None."""
        png, meta = self._paths(key)
        if not meta.is_file():
            return None
        alpha = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        if alpha is None:
            return None
        try:
            record = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # damaged (zero-filled, overwritten, not UTF-8): a miss, rewritten
            return None
        if not isinstance(record, dict) or not isinstance(record.get("quality"), dict):
            return None
        return alpha, record

    def put(self, key: str, alpha_u8: np.ndarray, record: dict) -> None:
        png, meta = self._paths(key)
        imageio.atomic_write_bytes(png, imageio.encode_png(alpha_u8))
        imageio.atomic_write_bytes(meta, json.dumps(record).encode())


class Manifest:
    """JSON lines, each appended whole under an exclusive lock on the manifest itself (flock: safe
    across processes and threads, and no lock file left beside it). A row the disk cannot take
    whole is taken back out, so a full disk leaves no torn row."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._thread_lock = threading.Lock()

    def size(self) -> int:
        return self.path.stat().st_size if self.path.is_file() else 0

    def rows(self) -> list[dict]:
        """Every complete row; a line cut short by a kill, or edited into something that is no row
        (no object with `run` and `input`), is skipped."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("run"), str) and isinstance(row.get("input"), str):
                out.append(row)
        return out

    def append(self, row: dict) -> None:
        line = (json.dumps(row, sort_keys=True) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            from filelock import FileLock

            other_processes = FileLock(str(self.path) + ".lock")
        else:
            other_processes = nullcontext()
        with self._thread_lock, other_processes, open(self.path, "ab+", buffering=0) as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file closes
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = b"\n" + line  # a row cut short by a kill: end its line so ours stands alone
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(f.fileno(), view):]
            except OSError:
                os.ftruncate(f.fileno(), size)  # ENOSPC and the like: no part of the row stays
                raise


class WorkClaims:
    """The inputs of one run in flight, across processes: OUT/.cvmatte/work/<run>/<digest of the
    input> held under flock from when an input is taken until its manifest row is written (or the
    process dies: the kernel lets go of the lock, so a killed run's inputs are free again). An input
    another invocation holds, or that got a row in this run after this invocation read the
    manifest, is left to it: two `--resume` of one run share its inputs instead of doing each
    twice. Without flock (Windows) every input is taken."""

    def __init__(self, root: Path, run_id: str, manifest: Manifest, since: int):
        """since: the manifest's size in bytes before this invocation read its rows."""
        self.folder = Path(root) / ".cvmatte" / "work" / run_id
        self.run_id = run_id
        self.manifest = manifest
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        self._offset = since
        self._recorded: set[str] = set()
        if fcntl is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, identity: str) -> Path:
        return self.folder / hashlib.sha256(identity.encode()).hexdigest()[:32]

    def _rows_since_start(self) -> set[str]:
        """The inputs (resolved paths) with a row of this run appended after this invocation began."""
        try:
            with open(self.manifest.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:  # no row written yet
            return self._recorded
        whole = data[:data.rfind(b"\n") + 1]  # a row being appended is taken on the next look
        self._offset += len(whole)
        for line in whole.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("run") == self.run_id:
                self._recorded.add(str(row.get("path") or row.get("input")))
        return self._recorded

    def take(self, identity: str) -> bool:
        """True: this invocation does the input (call `done` once its row is written)."""
        if fcntl is None:
            return True
        fd = os.open(self._path(identity), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False  # another invocation is on it
        with self._lock:
            if identity in self._rows_since_start():  # another invocation finished it meanwhile
                self._path(identity).unlink(missing_ok=True)  # the claim this open re-created
                os.close(fd)
                return False
            self._held[identity] = fd
        return True

    def done(self, identity: str) -> None:
        """The input's row is written: its claim goes. One who opened the claim before it went
        locks it after, finds the row and leaves the input."""
        with self._lock:
            fd = self._held.pop(identity, None)
        if fd is not None:
            self._path(identity).unlink(missing_ok=True)
            os.close(fd)

    def close(self) -> None:
        """Inputs taken and not done (an interrupted run) are let go for the next invocation."""
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for fd in held:
            os.close(fd)
        for folder in (self.folder, self.folder.parent):  # the run's claims, then work/, once empty
            try:
                folder.rmdir()
            except OSError:
                break


class NameClaims:
    """Output stems claimed atomically across processes and runs: OUT/.cvmatte/claims/<folder>/<stem>
    is created exclusively and holds the input's identity (its resolved path). The first input to
    claim a stem keeps it; an input re-run gets its own stem back; two runs into one folder never
    write one file for two inputs."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.folder = self.root / ".cvmatte" / "claims"

    def claim(self, out_folder: Path, candidates, identity: str) -> str:
        """The first candidate stem that is free or already this identity's."""
        d = self.folder / Path(out_folder).relative_to(self.root)
        d.mkdir(parents=True, exist_ok=True)
        # The claim appears whole or not at all: written aside, then hard-linked into place (a
        # link fails if the name exists), so a reader never sees an empty claim.
        fd, tmp = tempfile.mkstemp(prefix=".claim-", dir=d)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(identity)
            for stem in candidates:
                try:
                    os.link(tmp, d / stem)
                    return stem
                except FileExistsError:
                    try:
                        if (d / stem).read_text(encoding="utf-8") == identity:
                            return stem
                    except OSError:
                        pass
        finally:
            os.unlink(tmp)
        raise RuntimeError(f"no free output name for {identity}")
