"""Dynamic batching over a ring of reusable staging buffers.

Any thread submits one model input at a time ([C, H, W] float32, a whole image at the model's
size or one tile) and gets a future. A dispatcher thread groups inputs of one shape into batches
of `batch_size`, copies them into a free slot of a ring of host buffers (page-locked on GPU
backends, so the copy to the device is a DMA that overlaps compute) and launches the slot; a
completer thread waits for slots in launch order and hands every input its output. So tiles of
many images share batches, and a partly filled batch leaves after `flush_ms` instead of waiting
for a slow neighbour.

The ring is allocated once per input shape and reused for the whole run; while all of its slots
are in flight the dispatcher waits, and `submit` blocks once `max_pending` inputs are queued, so
memory stays bounded however fast images arrive.

A backend takes part through three methods (the slot part of backends.base.Backend; HostSlots
implements them for the CPU): `make_slot` allocates a
slot's host buffers and whatever device buffers, streams and events it needs, `launch(slot, n)`
starts host-to-device copy, compute and device-to-host copy without waiting (on the CPU it simply
runs), and `wait(slot)` blocks until the outputs are in `slot.host_out` and returns the compute
seconds (GPU events on a GPU), from which the busy fraction is reported.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Slot:
    """One staging buffer of the ring: host_in [B, C, H, W], host_out [B, 1, H, W]; `state` holds
    the backend's device buffers, streams and events for this slot."""

    index: int
    host_in: np.ndarray
    host_out: np.ndarray
    state: object = None
    #: Inputs in this slot's current batch (the rest is padding when the backend needs full batches).
    n: int = 0


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    #: Batches that left part-filled because their oldest input waited flush_ms.
    flushed_early: int = 0
    #: Seconds the model computed (GPU events on a GPU, wall time of the run on the CPU).
    busy_s: float = 0.0
    first_launch: float | None = None
    last_done: float | None = None
    batch_size: int = 0
    shapes: set = field(default_factory=set)

    @property
    def wall_s(self) -> float:
        if self.first_launch is None or self.last_done is None:
            return 0.0
        return self.last_done - self.first_launch

    @property
    def busy_fraction(self) -> float:
        """Share of the time from the first launch to the last result that the model computed."""
        return self.busy_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def fill(self) -> float:
        """Average share of a batch holding real inputs."""
        return self.items / (self.batches * self.batch_size) if self.batches else 0.0

    def summary(self) -> str:
        return (f"{self.items} inputs in {self.batches} batches of {self.batch_size} (fill {self.fill:.0%}, "
                f"{self.flushed_early} left part-filled), model busy {self.busy_fraction:.0%} of {self.wall_s:.2f} s")


@dataclass
class _Request:
    x: np.ndarray
    future: Future
    t_submit: float
    #: Launch this input's group now, part-filled or not (the caller has nothing more to add).
    urgent: bool = False


class _Ring:
    def __init__(self, backend, batch_size: int, chw: tuple[int, int, int], depth: int):
        self.slots = [backend.make_slot(i, batch_size, chw) for i in range(depth)]
        self.free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        for s in self.slots:
            self.free.put(s)
        self.in_flight = 0


class DynamicBatcher:
    """Wraps a slot backend; is itself a backend (`run`), so it drops in wherever one is used.

    batch_size: inputs per launch; depth: slots per ring (3: one filling, one computing, one
    draining); flush_ms: how long the oldest queued input may wait for companions; max_pending:
    queued inputs past which `submit` blocks; max_shapes: rings kept at once (small images give
    tiles of their own shapes; an idle ring of an old shape is dropped past this).
    """

    def __init__(self, backend, batch_size: int = 8, depth: int = 3, flush_ms: float = 5.0,
                 max_pending: int | None = None, max_shapes: int = 4):
        if batch_size < 1 or depth < 1:
            raise ValueError(f"batch_size and depth must be >= 1; got {batch_size}, {depth}")
        if getattr(backend, "max_batch", None) is not None and batch_size > backend.max_batch:
            batch_size = backend.max_batch  # an engine built for smaller batches
        self.backend = backend
        self.batch_size = batch_size
        self.depth = depth
        self.flush_s = flush_ms / 1000.0
        self.max_shapes = max_shapes
        self.stats = BatchStats(batch_size=batch_size)
        self._pending_room = threading.BoundedSemaphore(max_pending or batch_size * (depth + 1))
        self._inbox: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._launched: queue.SimpleQueue = queue.SimpleQueue()
        self._rings: OrderedDict[tuple, _Ring] = OrderedDict()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    # The Backend interface, passed through: what runs the model is the wrapped backend.
    @property
    def name(self):
        return self.backend.name

    @property
    def providers(self):
        return self.backend.providers

    @property
    def fell_back(self):
        return self.backend.fell_back

    @property
    def max_batch(self):
        return None

    @property
    def spec(self):
        return self.backend.spec

    def describe(self) -> str:
        return f"{self.backend.describe()}, batches of {self.batch_size} through a ring of {self.depth}"

    def submit(self, x: np.ndarray, flush: bool = False) -> Future:
        """x: [C, H, W] float32 -> a future of (alpha [1, H, W] float32, compute seconds per input).
        flush: launch this input's batch without waiting for companions."""
        if x.ndim != 3:
            raise ValueError(f"submit takes one input [C, H, W]; got shape {x.shape}")
        self._start()
        self._pending_room.acquire()
        fut: Future = Future()
        self._inbox.put(_Request(x, fut, time.perf_counter(), flush))
        return fut

    def run(self, batch: np.ndarray) -> np.ndarray:
        """[N, C, H, W] -> [N, 1, H, W], launched at once (inputs of other threads that are queued
        already may share the launches)."""
        futures = [self.submit(x, flush=i == len(batch) - 1) for i, x in enumerate(batch)]
        return np.stack([f.result()[0] for f in futures])

    def close(self) -> None:
        """Finish what was submitted, stop the threads."""
        with self._lock:
            if self._closed or not self._threads:
                self._closed = True
                return
            self._closed = True
        self._inbox.put(None)
        for t in self._threads:
            t.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _start(self):
        with self._lock:
            if self._closed:
                raise RuntimeError("this batcher was closed")
            if not self._threads:
                self._threads = [threading.Thread(target=self._dispatch, name="cvmatte-batch-dispatch", daemon=True),
                                 threading.Thread(target=self._complete, name="cvmatte-batch-complete", daemon=True)]
                for t in self._threads:
                    t.start()

    # Dispatcher: group by shape, launch full batches at once and part-filled ones after flush_s.
    def _dispatch(self):
        waiting: OrderedDict[tuple, deque[_Request]] = OrderedDict()
        closing = False
        while True:
            oldest = min((q[0].t_submit for q in waiting.values()), default=None)
            timeout = None if oldest is None else max(0.0, oldest + self.flush_s - time.perf_counter())
            if not closing:
                # Wait for the first input (or the oldest's flush time), then take all that queued
                # up meanwhile: on the CPU the launch itself computes, and inputs pile up during it.
                try:
                    req = self._inbox.get(timeout=timeout)
                    while True:
                        if req is None:
                            closing = True
                            break
                        waiting.setdefault(tuple(req.x.shape), deque()).append(req)
                        req = self._inbox.get_nowait()
                except queue.Empty:
                    pass
            now = time.perf_counter()
            for shape in list(waiting):
                q = waiting[shape]
                while len(q) >= self.batch_size or (q and (closing or now - q[0].t_submit >= self.flush_s
                                                           or any(r.urgent for r in q))):
                    group = [q.popleft() for _ in range(min(self.batch_size, len(q)))]
                    self._launch(shape, group, early=len(group) < self.batch_size and not closing)
                if not q:
                    del waiting[shape]
            if closing and not waiting:
                self._launched.put(None)
                return

    def _ring(self, shape: tuple) -> _Ring:
        ring = self._rings.get(shape)
        if ring is None:
            if len(self._rings) >= self.max_shapes:  # drop the least recently used idle ring
                with self._lock:
                    idle = next((key for key, old in self._rings.items() if old.in_flight == 0), None)
                if idle is not None:
                    del self._rings[idle]
            ring = self._rings[shape] = _Ring(self.backend, self.batch_size, shape, self.depth)
            self.stats.shapes.add(shape)
        self._rings.move_to_end(shape)
        return ring

    def _launch(self, shape: tuple, group: list[_Request], early: bool):
        try:
            ring = self._ring(shape)
        except BaseException as e:  # no staging memory for this shape (GPU out of memory, ...)
            for req in group:
                req.future.set_exception(e)
                self._pending_room.release()
            return
        slot = ring.free.get()  # blocks while every slot of this shape is in flight
        with self._lock:
            ring.in_flight += 1
        n = len(group)
        try:
            for i, req in enumerate(group):
                slot.host_in[i] = req.x
            slot.n = n
            if self.stats.first_launch is None:
                self.stats.first_launch = time.perf_counter()
            self.backend.launch(slot, n)
        except BaseException as e:
            self._launched.put((ring, slot, group, e))
            return
        finally:
            for _ in group:
                self._pending_room.release()
        self.stats.batches += 1
        self.stats.items += n
        self.stats.flushed_early += int(early)
        self._launched.put((ring, slot, group, None))

    # Completer: outputs back to the futures in launch order, then the slot is free again.
    def _complete(self):
        while True:
            item = self._launched.get()
            if item is None:
                return
            ring, slot, group, error = item
            seconds = 0.0
            if error is None:
                try:
                    seconds = self.backend.wait(slot)
                except BaseException as e:
                    error = e
            if error is None:
                self.stats.busy_s += seconds
                self.stats.last_done = time.perf_counter()
                per_input = seconds / len(group)
                outputs = [np.array(slot.host_out[i]) for i in range(len(group))]  # the slot is reused
            with self._lock:
                ring.in_flight -= 1
            ring.free.put(slot)
            for i, req in enumerate(group):
                if error is None:
                    req.future.set_result((outputs[i], per_input))
                else:
                    req.future.set_exception(error)
