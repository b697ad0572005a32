"""Backends share one small interface (see base.Backend); heavy imports stay inside each one.

`REGISTRY` names where each backend's class lives; its module is imported only when that backend
is created, so `import cvmatte` never loads torch, TensorRT or cuda-python. Each class has a
classmethod `from_model(model, *, device, threads, allow_cpu_fallback, precision, cuda_graphs,
compile)` that checks the options it honours and ignores the rest (compile=True, torch.compile,
is refused by the backends that have no such thing).
"""

from __future__ import annotations

import importlib
import importlib.util

from dataclasses import dataclass
from pathlib import Path

from ..errors import DeviceError
from ..spec import ResolvedModel
from .base import Backend

#: backend name -> (module in this package, class name)
REGISTRY: dict[str, tuple[str, str]] = {
    "onnxruntime": ("onnxruntime", "OrtBackend"),
    "torch": ("torch_backend", "TorchBackend"),
    "tensorrt": ("tensorrt", "TensorRTBackend"),
    "openvino": ("openvino", "OpenVinoBackend"),
}
BACKENDS = tuple(REGISTRY)
#: gpu and npu are Intel's, through OpenVINO; cuda and tensorrt NVIDIA's.
DEVICES = ("auto", "cpu", "cuda", "tensorrt", "gpu", "npu")


#: Reduced inference precisions `--precision auto` tries after an INT8 file, fastest first
#: (benchmarks/NOTES.md); each only where the model passed its gate (ModelSpec.precision_gate) and
#: the device has the arithmetic.
AUTO_PRECISIONS = ("bf16", "fp16")


@dataclass(frozen=True)
class RuntimeChoice:
    backend: str
    precision: str
    #: Why, in one line, when something was chosen for the user ("" when everything was given).
    reason: str = ""
    #: The file to run instead of the one asked for: its INT8 variant that passed its gate.
    model: ResolvedModel | None = None


def choose_runtime(model: ResolvedModel, backend: str = "auto", device: str = "auto",
                   precision: str = "auto") -> RuntimeChoice:
    """The backend and precision a run uses. backend "auto": a torch checkpoint runs on torch, an
    OpenVINO IR file on OpenVINO, an NVIDIA GPU (device auto, cuda or tensorrt) on ONNX Runtime's
    CUDA provider, Intel's gpu/npu and the CPU on OpenVINO (ONNX Runtime where OpenVINO is not
    installed). precision "auto": on OpenVINO the fastest reduced precision the model passed its
    accuracy gate in and the device can run, else fp32; elsewhere the file's own precision."""
    reasons = []
    if backend == "auto":
        backend, why = _auto_backend(model, device)
        reasons.append(f"{backend} ({why})")
    variant = None
    if precision == "auto":
        if backend == "openvino":
            variant, why = _int8_variant(model, device)
            if why:
                reasons.append(why)
        if variant is not None:
            gate = model.spec.precision_gate["int8"]
            precision = "fp32"  # the hint for its float layers, which the gate was measured with
            reasons.append(f"int8 ({variant.path.name}): passed its accuracy gate ({gate.get('evidence', 'measured')})")
        else:
            precision, why = _auto_precision(model, backend, device)
            if why:
                reasons.append(why)
    return RuntimeChoice(backend, precision, "; ".join(reasons), variant)


def _int8_variant(model: ResolvedModel, device: str) -> tuple[ResolvedModel | None, str]:
    """The model's INT8 file that passed its gate, where it computes here what it was gated on."""
    from ..zoo import variant
    from .openvino import int8_exact_here

    gate = model.spec.precision_gate.get("int8")
    if gate and not gate.get("passed"):
        return None, f"int8 not used: {model.spec.name} failed its accuracy gate ({gate.get('evidence')})"
    found = variant(model, "int8") if model.spec.precision == "fp32" else None
    if found is None:
        return None, ""
    if device in ("auto", "cpu") and not int8_exact_here():
        return None, (f"int8 ({found.path.name}) not used: this CPU has no VNNI, and without it int8 sums may "
                      "saturate where the gate measured none")
    return found, ""


def _auto_backend(model: ResolvedModel, device: str) -> tuple[str, str]:
    suffix = Path(model.path).suffix
    if suffix == ".pt":
        return "torch", "a torch checkpoint"
    if suffix == ".xml":
        return "openvino", "an OpenVINO IR file"
    if device in ("cuda", "tensorrt"):
        return "onnxruntime", f"--device {device}"
    if device in ("gpu", "npu"):
        return "openvino", f"Intel {device.upper()}"
    if device == "auto":
        from .onnxruntime import cuda_usable

        if cuda_usable():
            return "onnxruntime", "an NVIDIA GPU"
    if importlib.util.find_spec("openvino") is None:
        return "onnxruntime", "on the CPU; OpenVINO, faster here, is not installed"
    return "openvino", "the fastest CPU backend measured"


def _auto_precision(model: ResolvedModel, backend: str, device: str) -> tuple[str, str]:
    spec = model.spec
    if backend != "openvino":
        return spec.precision, ""  # in the file (FP16 ops, Q/DQ nodes), or fp32
    if spec.precision != "fp32":
        return "fp32", ""  # OpenVINO's hint for the float layers of an FP16 or INT8 file
    from .openvino import DEVICE_NAMES, CAPABILITY, capabilities

    caps = capabilities(DEVICE_NAMES.get(device, "CPU"))
    skipped = []
    for p in AUTO_PRECISIONS:
        gate = spec.precision_gate.get(p)
        if CAPABILITY[p] not in caps:
            continue  # the hardware has no such arithmetic: nothing to say per run
        if gate and gate.get("passed"):
            return p, f"{p}: passed its accuracy gate ({gate.get('evidence', 'measured')})"
        skipped.append(f"{p} not used: " + (f"{spec.name} failed its accuracy gate ({gate.get('evidence')})"
                                            if gate else f"{spec.name} has no {p} accuracy gate measured"))
    return "fp32", "; ".join(skipped)


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


__all__ = ["Backend", "BACKENDS", "DEVICES", "REGISTRY", "RuntimeChoice", "backend_class", "choose_runtime",
           "create_backend"]
