"""Admission: how many requests are let in, and when (the gate, batch slots, upload bytes, tickets),
and the ASGI middleware that applies it before and while a body is read."""

from __future__ import annotations

import asyncio
import json
import threading

from fastapi import HTTPException


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


def busy(what: str) -> HTTPException:
    return HTTPException(503, f"busy: {what}; retry shortly", headers={"Retry-After": "1"})


class Admission:
    """A pure ASGI middleware: admission and the body limit, decided before and while the body is
    read (an `@app.middleware("http")` one only runs after the body has been spooled whole).

    - POST /v1/matte takes a place in the gate, /v1/batch and /v1/jobs a batch slot, when the request
      comes in: past capacity, 503 with Retry-After before a byte of the body is read.
    - The body is counted as it streams (chunked uploads have no Content-Length): past the path's
      limit, 413 at once and the connection is closed; the rest of the body is never read."""

    def __init__(self, app, service):  # service: the Service whose bounds apply
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
