"""TensorRT backend: an engine built on this GPU, run with the name-based tensor API of TensorRT
10/11 (`set_input_shape`, `set_tensor_address`, `execute_async_v3`), memory and streams through
cuda-python.

Three streams per backend: uploads, compute and downloads. A slot's upload is ordered before its
compute and its download after it with events, so while batch k computes, batch k+1 uploads from
its page-locked buffer and batch k-1 downloads into its own: the copies hide behind compute, and
the CPU returns from `launch` at once. One execution context serves all slots: its launches are
serialised on the compute stream, and the tensor addresses are read when each launch is enqueued.

Engines are tied to one GPU and one TensorRT version. Given an ONNX file, the engine is built here
once and cached under the zoo's cache, keyed by the ONNX file's sha256, the GPU and the TensorRT
version; given an engine, its metadata is checked first and a mismatch is refused with the fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import cuda_host
from ..batching import Slot
from ..errors import DeviceError
from ..spec import ResolvedModel, sha256_file
from ..zoo import cache_dir
from .base import DeviceSlots, activate

log = logging.getLogger("cvmatte")

#: Largest tile side a built refiner engine accepts.
MAX_TILE = 1024


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise DeviceError("--backend tensorrt needs the tensorrt package (NVIDIA's index: pip install tensorrt-cu13, "
                          "or JetPack's); or use --backend onnxruntime --device cuda, or --backend torch") from None
    return trt


@dataclass
class _SlotState:
    d_in: cuda_host.DeviceBuffer
    d_out: cuda_host.DeviceBuffer
    uploaded: object
    started: object
    computed: object
    downloaded: object


class TensorRTBackend(DeviceSlots):
    name = "tensorrt"
    fell_back = False
    on_gpu = True

    def __init__(self, model: ResolvedModel, max_batch: int = 8):
        from .tensorrt_build import build_engine, check_engine_compatible, load_engine_meta

        trt = _import_tensorrt()
        self.spec = model.spec
        gpu, cc = cuda_host.device_name_and_capability(0)
        path = Path(model.path)
        if path.suffix == ".onnx":
            key = f"{self.spec.name}-{sha256_file(path)[:12]}-{gpu.replace(' ', '_')}-trt{trt.__version__}.engine"
            engine_path = cache_dir() / "engines" / key
            if not engine_path.is_file():
                log.warning("building a TensorRT engine for %s on %s (once; cached at %s)", path.name, gpu, engine_path)
                max_hw = (MAX_TILE, MAX_TILE) if self.spec.dynamic_hw and self.spec.tileable else None
                build_engine(path, self.spec, engine_path, max_batch=max_batch, max_hw=max_hw)
        else:
            engine_path = path
        meta = load_engine_meta(engine_path)
        check_engine_compatible(meta, trt.__version__, gpu, cc)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise DeviceError(f"{engine_path}: TensorRT {trt.__version__} could not load this engine (see its log above); "
                              "rebuild it here: cvmatte export MODEL.onnx -o DIR --trt")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or self.spec.output_name not in outputs:
            raise DeviceError(f"{engine_path}: expected one input and output {self.spec.output_name!r}; "
                              f"the engine has inputs {inputs} and outputs {outputs}")
        self.input_name, self.output_name = inputs[0], self.spec.output_name
        self.in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self.profiles = [self.engine.get_tensor_profile_shape(self.input_name, i)
                         for i in range(self.engine.num_optimization_profiles)]
        self.max_batch = max(p[2][0] for p in self.profiles)
        self.context = self.engine.create_execution_context()
        self.profile = 0
        self.h2d, self.compute, self.d2h = (cuda_host.new_stream() for _ in range(3))
        self.providers = [f"TensorRT {trt.__version__}", gpu]

    @classmethod
    def from_model(cls, model: ResolvedModel, *, device: str = "auto", threads: int | None = None,
                   allow_cpu_fallback: bool = False, precision: str = "fp32",
                   cuda_graphs: bool = False, compile: bool = False) -> "TensorRTBackend":
        """create_backend's entry: GPU only; precision comes from the engine (built from the ONNX file's
        own precision), and threads, CPU fallback and CUDA graphs do not apply; compile is refused."""
        if compile:
            raise DeviceError("--compile is torch.compile, for --backend torch; a TensorRT engine is compiled already")
        if device not in ("auto", "cuda", "tensorrt"):
            raise DeviceError(f"the tensorrt backend runs on an NVIDIA GPU only; got --device {device}")
        return cls(model)

    def describe(self) -> str:
        return f"tensorrt {self.providers[0]} on {self.providers[1]}"

    def _select_profile(self, shape: tuple[int, ...]) -> None:
        """The first optimization profile whose min..max range holds this batch and tile shape."""
        for i, (lo, _, hi) in enumerate(self.profiles):
            if all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                if i != self.profile:
                    self.context.set_optimization_profile_async(i, int(self.compute))
                    self.profile = i
                return
        ranges = ", ".join(f"{tuple(lo)}..{tuple(hi)}" for lo, _, hi in self.profiles)
        raise DeviceError(f"input shape {shape} fits none of the engine's profiles ({ranges}); rebuild it with a "
                          "larger max batch or tile size")

    def host_buffer(self, shape, dtype=np.float32):
        return cuda_host.pinned_empty(shape, dtype)

    def make_slot(self, index: int, batch: int, chw: tuple[int, int, int]) -> Slot:
        c, h, w = chw
        host_in = self.host_buffer((batch, c, h, w), self.in_dtype)
        host_out = self.host_buffer((batch, 1, h, w), self.out_dtype)
        state = _SlotState(cuda_host.DeviceBuffer(host_in.nbytes), cuda_host.DeviceBuffer(host_out.nbytes),
                           *(cuda_host.new_event() for _ in range(4)))
        return Slot(index, host_in, host_out, state)

    def launch(self, slot: Slot, n: int) -> None:
        s: _SlotState = slot.state
        shape = (n, *slot.host_in.shape[1:])
        self._select_profile(shape)
        in_bytes = slot.host_in[:n].nbytes
        out_bytes = slot.host_out[:n].nbytes
        cuda_host.copy_async(s.d_in.ptr, slot.host_in.ctypes.data, in_bytes, "h2d", self.h2d)
        cuda_host.record(s.uploaded, self.h2d)
        cuda_host.stream_wait(self.compute, s.uploaded)
        cuda_host.record(s.started, self.compute)
        if not self.context.set_input_shape(self.input_name, shape):
            raise DeviceError(f"TensorRT refused input shape {shape}")
        self.context.set_tensor_address(self.input_name, s.d_in.ptr)
        self.context.set_tensor_address(self.output_name, s.d_out.ptr)
        if not self.context.execute_async_v3(int(self.compute)):
            raise DeviceError("TensorRT execute_async_v3 failed (see its log above)")
        cuda_host.record(s.computed, self.compute)
        cuda_host.stream_wait(self.d2h, s.computed)
        cuda_host.copy_async(slot.host_out.ctypes.data, s.d_out.ptr, out_bytes, "d2h", self.d2h)
        cuda_host.record(s.downloaded, self.d2h)

    def wait(self, slot: Slot) -> float:
        s: _SlotState = slot.state
        cuda_host.event_sync(s.downloaded)
        activate(slot.host_out[:slot.n], self.spec)
        return cuda_host.elapsed_s(s.started, s.computed)
