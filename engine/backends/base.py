"""The interface every backend implements, and the factory that picks one by name."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import DeviceError
from ..zoo import ResolvedModel


class Backend(Protocol):
    #: e.g. "onnxruntime"
    name: str
    #: What actually runs the model, e.g. ["CPUExecutionProvider"]; said in every run's output.
    providers: list[str]
    #: Largest batch the backend accepts; None when the batch axis is dynamic.
    max_batch: int | None
    #: True when a GPU was asked for and the caller allowed running on the CPU instead.
    fell_back: bool

    def run(self, batch: np.ndarray) -> np.ndarray:
        """batch: float32 [N, C, H, W], normalised as the spec says -> alpha float32 [N, 1, H, W] in [0, 1]."""
        ...

    def describe(self) -> str:
        ...


BACKENDS = ("onnxruntime",)
DEVICES = ("auto", "cpu", "cuda", "tensorrt")


def create_backend(
    model: ResolvedModel,
    backend: str = "onnxruntime",
    device: str = "auto",
    threads: int | None = None,
    allow_cpu_fallback: bool = False,
) -> Backend:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    if backend == "onnxruntime":
        from .onnxruntime import OrtBackend

        return OrtBackend(model, device=device, threads=threads, allow_cpu_fallback=allow_cpu_fallback)
    raise DeviceError(f"unknown backend {backend!r}; this build has {', '.join(BACKENDS)}")
