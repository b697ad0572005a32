"""Background jobs (POST /v1/jobs): their state, and the store that keeps them for a while."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from .admission import Busy


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
