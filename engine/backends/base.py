"""The interface every backend implements, and the slot helpers they share. The factory that picks
a backend by name is `create_backend` in this package's `__init__`."""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from ..batching import Slot


class Backend(Protocol):
    #: e.g. "onnxruntime"
    name: str
    #: What actually runs the model, e.g. ["CPUExecutionProvider"]; said in every run's output.
    providers: list[str]
    #: Largest batch the backend accepts; None when the batch axis is dynamic.
    max_batch: int | None
    #: True when a GPU was asked for and the caller allowed running on the CPU instead.
    fell_back: bool
    #: True when the model runs on a GPU.
    on_gpu: bool

    def run(self, batch: np.ndarray) -> np.ndarray:
        """batch: float32 [N, C, H, W], normalised as the spec says -> alpha float32 [N, 1, H, W] in [0, 1]."""
        ...

    def describe(self) -> str:
        ...

    # The slot interface that batching.DynamicBatcher drives (see HostSlots for the CPU's).
    def make_slot(self, index: int, batch: int, chw: tuple[int, int, int]) -> Slot:
        ...

    def launch(self, slot: Slot, n: int) -> None:
        ...

    def wait(self, slot: Slot) -> float:
        ...


def activate(out: np.ndarray, spec) -> np.ndarray:
    """The spec's output activation applied to the model's raw output, in place."""
    if spec.output_activation == "sigmoid":
        np.negative(out, out=out)
        np.exp(out, out=out)
        out += 1.0
        np.reciprocal(out, out=out)
    return out


class HostSlots:
    """The slot interface for a backend whose `run` is synchronous (ONNX Runtime on the CPU):
    `launch` runs the model straight into the slot's output buffer, `wait` returns the seconds it
    took. GPU backends override all three with streams, device buffers and events."""

    #: Launch every batch full (the tail padded with zeros): CUDA graphs and fixed-shape engines.
    static_batch = False
    on_gpu = False

    def host_buffer(self, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """A staging buffer; GPU backends return page-locked memory."""
        return np.empty(shape, dtype)

    def make_slot(self, index: int, batch: int, chw: tuple[int, int, int]) -> Slot:
        c, h, w = chw
        return Slot(index, self.host_buffer((batch, c, h, w)), self.host_buffer((batch, 1, h, w)))

    def launch(self, slot: Slot, n: int) -> None:
        t0 = time.perf_counter()
        if self.static_batch:
            slot.host_in[n:] = 0
            n = len(slot.host_in)
        slot.host_out[:n] = self.run(slot.host_in[:n])
        slot.state = time.perf_counter() - t0

    def wait(self, slot: Slot) -> float:
        return slot.state


class DeviceSlots(HostSlots):
    """For GPU backends whose launch/wait are the real (asynchronous) path: a plain synchronous
    `run` goes through one private slot per input shape, kept for reuse."""

    max_batch: int

    def run(self, batch: np.ndarray) -> np.ndarray:
        slots = self.__dict__.setdefault("_run_slots", {})
        outs = []
        for i in range(0, len(batch), self.max_batch):
            part = batch[i:i + self.max_batch]
            key = part.shape[1:]
            if key not in slots:
                slots[key] = self.make_slot(-1, self.max_batch, key)
            slot = slots[key]
            slot.host_in[:len(part)] = part
            slot.n = len(part)
            self.launch(slot, len(part))
            self.wait(slot)
            outs.append(slot.host_out[:len(part)].astype(np.float32))
        return np.concatenate(outs)

