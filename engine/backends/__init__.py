"""Backends share one small interface (see base.Backend); heavy imports stay inside each one.

`REGISTRY` names where each backend's class lives; its module is imported only when that backend
is created, so `import cvmatte` never loads torch, TensorRT or cuda-python. Each class has a
classmethod `from_model(model, *, device, threads, allow_cpu_fallback, precision, cuda_graphs,
compile)` that checks the options it honours and ignores the rest (compile=True, torch.compile,
is refused by the backends that have no such thing).
"""

from __future__ import annotations

import importlib

from ..errors import DeviceError
from ..spec import ResolvedModel
from .base import Backend

#: backend name -> (module in this package, class name)
REGISTRY: dict[str, tuple[str, str]] = {
    "onnxruntime": ("onnxruntime", "OrtBackend"),
    "torch": ("torch_backend", "TorchBackend"),
    "tensorrt": ("tensorrt", "TensorRTBackend"),
}
BACKENDS = tuple(REGISTRY)
DEVICES = ("auto", "cpu", "cuda", "tensorrt")


def backend_class(backend: str) -> type:
    """The class registered under `backend` (its module imported now)."""
    try:
        module, cls = REGISTRY[backend]
    except KeyError:
        raise DeviceError(f"unknown backend {backend!r}; this build has {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def create_backend(
    model: ResolvedModel,
    backend: str = "onnxruntime",
    device: str = "auto",
    threads: int | None = None,
    allow_cpu_fallback: bool = False,
    precision: str = "fp32",
    cuda_graphs: bool = False,
    compile: bool = False,
) -> Backend:
    """backend: onnxruntime (ONNX files; CPU, CUDA or TensorRT execution providers), torch (CV-UNet and U²-Net-p
    checkpoints; eager or CUDA graphs, FP16 or BF16 on CUDA, torch.compile) or tensorrt (an engine built on this GPU).
    precision, cuda_graphs and compile apply to the torch backend."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    return backend_class(backend).from_model(model, device=device, threads=threads,
                                             allow_cpu_fallback=allow_cpu_fallback, precision=precision,
                                             cuda_graphs=cuda_graphs, compile=compile)


__all__ = ["Backend", "BACKENDS", "DEVICES", "REGISTRY", "backend_class", "create_backend"]
