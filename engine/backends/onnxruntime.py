"""ONNX Runtime backend: CPU here, the CUDA and TensorRT execution providers where present.

ONNX Runtime falls back to the CPU silently when a GPU provider cannot load (a missing CUDA or
cuDNN library, no driver). We check the providers the session really got and, unless the user
allowed a fallback, refuse with a diagnosis of what is missing.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import time

import numpy as np

from ..batching import Slot
from ..errors import DeviceError
from ..spec import ResolvedModel
from .base import HostSlots, activate

log = logging.getLogger("cvmatte")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"


def _can_load(*names: str) -> bool:
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def cuda_usable() -> bool:
    """This onnxruntime build has the CUDA provider and an NVIDIA driver loads."""
    import onnxruntime as ort

    return CUDA in ort.get_available_providers() and _can_load("libcuda.so.1")


def diagnose_gpu(provider: str) -> str:
    """Why `provider` is not usable here, in words a user can act on."""
    import onnxruntime as ort

    reasons = []
    if provider not in ort.get_available_providers():
        reasons.append(
            f"this onnxruntime build ({ort.__version__}) has no {provider}: the CPU package `onnxruntime` is "
            "installed. Install the GPU build instead: pip uninstall -y onnxruntime && pip install 'cvmatte[gpu]'"
        )
    if not _can_load("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        smi = "nvidia-smi is present" if shutil.which("nvidia-smi") else "nvidia-smi not found"
        reasons.append(f"no NVIDIA driver (libcuda.so.1 cannot be loaded; {smi}): this machine has no usable GPU")
    else:
        missing = [lib for lib, names in {
            "CUDA runtime 13 (libcudart.so.13)": ("libcudart.so.13",),
            "cuBLASLt 13 (libcublasLt.so.13)": ("libcublasLt.so.13",),
            "cuDNN 9 (libcudnn.so.9)": ("libcudnn.so.9",),
        }.items() if not _can_load(*names)]
        if missing:
            reasons.append(
                "missing CUDA libraries: " + ", ".join(missing) +
                " (pip install 'onnxruntime-gpu[cuda,cudnn]' brings them)"
            )
        if provider == TRT and not _can_load("libnvinfer.so.10"):
            reasons.append("TensorRT 10 (libnvinfer.so.10) not found: onnxruntime-gpu's TensorRT provider links to it")
    if not reasons:
        reasons.append("ONNX Runtime could not create the provider; set ORT's log level to 0 for its own message")
    return "; ".join(reasons)


class OrtBackend(HostSlots):
    """On the CPU, `run` is the whole story. With the CUDA provider, batches go through I/O
    binding: the input is bound in the slot's page-locked host buffer (ORT's upload is then a DMA)
    and the output is bound to the slot's page-locked output buffer, so nothing is copied twice."""

    name = "onnxruntime"

    def __init__(self, model: ResolvedModel, device: str = "auto", threads: int | None = None,
                 allow_cpu_fallback: bool = False, spin: bool = False):
        import onnxruntime as ort

        self.spec = model.spec
        self.max_batch = None if self.spec.dynamic_batch else 1
        available = ort.get_available_providers()
        wanted = {"cpu": [CPU], "cuda": [CUDA, CPU], "tensorrt": [TRT, CUDA, CPU]}.get(device)
        if device == "auto":
            wanted = [CUDA, CPU] if cuda_usable() else [CPU]
        gpu = wanted[0] if wanted[0] != CPU else None
        if gpu and gpu not in available and not allow_cpu_fallback:
            raise DeviceError(f"--device {device}: {diagnose_gpu(gpu)}")

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # a failed GPU provider is diagnosed below, not in ORT's log
        # ORT's workers spin between ops by default, burning the cores that the pipeline's
        # decode/refine/encode threads need: 12% more images/s without (benchmarks/NOTES.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = ort.InferenceSession(str(model.path), options, providers=[p for p in wanted if p in available])
        self.providers = self.session.get_providers()
        self.fell_back = bool(gpu) and gpu not in self.providers
        if self.fell_back:
            why = diagnose_gpu(gpu)
            if not allow_cpu_fallback:
                raise DeviceError(f"--device {device}: ONNX Runtime could not use {gpu}: {why}")
            log.warning("running on the CPU, not %s (allowed by the caller): %s", gpu, why)
        self._dtype = np.float16 if self.spec.input_dtype == "float16" else np.float32
        # I/O binding into pinned buffers where ORT runs on the GPU and the model's I/O is float32.
        self.on_gpu = self.providers[0] in (CUDA, TRT)
        self.bind_pinned = self.on_gpu and self._dtype == np.float32

    @classmethod
    def from_model(cls, model: ResolvedModel, *, device: str = "auto", threads: int | None = None,
                   allow_cpu_fallback: bool = False, precision: str = "fp32", cuda_graphs: bool = False,
                   compile: bool = False) -> "OrtBackend":
        """create_backend's entry; precision comes from the ONNX file itself and ORT has no CUDA-graph
        option here, so those two are ignored; compile (torch.compile) is refused."""
        if compile:
            raise DeviceError("--compile is torch.compile, for --backend torch; ONNX Runtime optimises its graph itself")
        if precision not in ("fp32", model.spec.precision):
            raise DeviceError(f"ONNX Runtime runs the precision in the file ({model.spec.precision}); --precision "
                              f"{precision} is an inference precision of --backend openvino or torch")
        if device in ("gpu", "npu"):
            raise DeviceError(f"--device {device} is an Intel device, run through --backend openvino")
        return cls(model, device=device, threads=threads, allow_cpu_fallback=allow_cpu_fallback)

    def host_buffer(self, shape, dtype=np.float32):
        if not self.bind_pinned:
            return np.empty(shape, dtype)
        from .. import cuda_host

        return cuda_host.pinned_empty(shape, dtype)

    def launch(self, slot: Slot, n: int) -> None:
        if not self.bind_pinned:
            return super().launch(slot, n)
        t0 = time.perf_counter()
        io = self.session.io_binding()
        io.bind_cpu_input(self.spec.input_name, slot.host_in[:n])
        io.bind_output(self.spec.output_name, "cpu", 0, np.float32, list(slot.host_out[:n].shape),
                       slot.host_out.ctypes.data)
        self.session.run_with_iobinding(io)
        activate(slot.host_out[:n], self.spec)
        slot.state = time.perf_counter() - t0

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.max_batch is not None and batch.shape[0] > self.max_batch:
            return np.concatenate([self.run(batch[i:i + self.max_batch]) for i in range(0, len(batch), self.max_batch)])
        (out,) = self.session.run([self.spec.output_name], {self.spec.input_name: batch.astype(self._dtype, copy=False)})
        return activate(out.astype(np.float32, copy=False), self.spec)

    def describe(self) -> str:
        fb = " (fell back to CPU)" if self.fell_back else ""
        return f"onnxruntime {self.providers[0]}{fb}"
