"""torch backend: the project's torch networks (CV-UNet and U²-Net-p checkpoints, and the default
U²-Net-p ported from its ONNX file) on a CUDA GPU where TensorRT is not
installed, eager or through CUDA graphs, FP32 or FP16; on the CPU, eager FP32 (for development).

On CUDA it drives the same ring as the TensorRT backend: page-locked host tensors per slot,
device tensors per slot, and three streams (upload, compute, download) ordered by events, so the
copies of neighbouring batches overlap compute. With CUDA graphs each slot captures one graph
for its fixed batch shape (the model's kernels launched by one call; the batcher pads batches to
full size); the graphs share one memory pool, which is safe because they replay one after
another on the compute stream, and each copies its result into its slot's own output tensor
inside the graph, so the next replay cannot overwrite a result still being downloaded.

torch is imported only when this backend is created: `import cvmatte` never loads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..batching import Slot
from ..errors import DeviceError, ModelError
from ..spec import ModelSpec, ResolvedModel
from .base import DeviceSlots

log = logging.getLogger("cvmatte")

PRECISIONS = ("fp32", "fp16")


def _import_torch():
    try:
        import torch
    except ImportError:
        raise DeviceError("--backend torch needs torch: pip install 'cvmatte[torch]'") from None
    return torch


def _why_no_cuda(torch) -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build: install a CUDA build of torch"
    try:
        torch.cuda.init()
    except Exception as e:  # torch's own message names a missing driver or a too-old one
        return f"torch (CUDA {torch.version.cuda}) cannot use a GPU: {e}"
    return f"torch (CUDA {torch.version.cuda}) finds no CUDA GPU"


@dataclass
class _SlotState:
    host_in: object   # the pinned torch tensors behind the slot's numpy views
    host_out: object
    d_in: object
    d_out: object
    uploaded: object
    started: object
    computed: object
    downloaded: object
    graph: object = None


class TorchBackend(DeviceSlots):
    name = "torch"

    def __init__(self, module, spec: ModelSpec, device: str = "auto", precision: str = "fp32",
                 cuda_graphs: bool = False, threads: int | None = None, allow_cpu_fallback: bool = False,
                 max_batch: int = 16):
        torch = _import_torch()
        self.torch = torch
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        if device == "tensorrt":
            raise DeviceError("--device tensorrt is for --backend tensorrt or onnxruntime; the torch backend runs on cuda or cpu")
        self.spec = spec
        self.fell_back = False
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if use_cuda and not torch.cuda.is_available():
            why = _why_no_cuda(torch)
            if not allow_cpu_fallback:
                raise DeviceError(f"--backend torch --device cuda: {why}")
            log.warning("running on the CPU, not CUDA (allowed by the caller): %s", why)
            use_cuda, self.fell_back = False, True
        if not use_cuda and (precision != "fp32" or cuda_graphs):
            what = "FP16" if precision != "fp32" else "CUDA graphs"
            if not self.fell_back:
                raise DeviceError(f"the torch backend runs {what} on CUDA only; on the CPU use fp32 without graphs")
            precision, cuda_graphs = "fp32", False
        self.precision = precision
        self.cuda_graphs = cuda_graphs
        self.static_batch = cuda_graphs
        self.max_batch = max_batch
        self.device = torch.device("cuda" if use_cuda else "cpu")
        self.on_gpu = use_cuda
        if threads and not use_cuda:
            torch.set_num_threads(threads)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        module = module.eval().to(self.device, dtype)
        if use_cuda:
            module = module.to(memory_format=torch.channels_last)
            self.h2d, self.compute, self.d2h = (torch.cuda.Stream(self.device) for _ in range(3))
            self._pool = torch.cuda.graph_pool_handle() if cuda_graphs else None
            self.providers = [f"torch {torch.__version__} CUDA {torch.version.cuda}", torch.cuda.get_device_name(self.device)]
        else:
            self.providers = [f"torch {torch.__version__} CPU"]
        self.module = module
        self._dtype = dtype

    @classmethod
    def from_model(cls, model: ResolvedModel, *, device: str = "auto", threads: int | None = None,
                   allow_cpu_fallback: bool = False, precision: str = "fp32", cuda_graphs: bool = False,
                   max_batch: int = 16) -> "TorchBackend":
        """Checkpoints (`.pt` from `cvmatte distill` / `cvmatte finetune`: CV-UNets and U²-Net-p,
        pruned or not) and U²-Net-p ONNX files (the default model), ported to torch from the
        file's own weights."""
        kwargs = dict(device=device, precision=precision, cuda_graphs=cuda_graphs, threads=threads,
                      allow_cpu_fallback=allow_cpu_fallback, max_batch=max_batch)
        path = Path(model.path)
        _import_torch()
        if path.suffix == ".pt":
            from ..nets.checkpoint import load_checkpoint

            module, spec, _ = load_checkpoint(path)
            return cls(module, spec, **kwargs)
        from ..nets.u2net import from_onnx

        try:
            module = from_onnx(path)
        except ValueError as e:
            raise ModelError(f"the torch backend runs cvmatte checkpoints (.pt) and U²-Net-p ONNX files; {e}. "
                             "Use --backend onnxruntime for this model") from None
        return cls(module, model.spec, **kwargs)

    def describe(self) -> str:
        mode = "CUDA graphs" if self.cuda_graphs else "eager"
        fb = " (fell back to CPU)" if self.fell_back else ""
        return f"torch {mode} {self.precision} on {' / '.join(self.providers)}{fb}"

    def _forward(self, x):
        return self.module(x.to(self._dtype, memory_format=self.torch.channels_last)).float()

    # CPU: the synchronous path, HostSlots drives it through the batcher.
    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.device.type == "cuda":
            return super().run(batch)
        with self.torch.inference_mode():
            return self.module(self.torch.from_numpy(np.ascontiguousarray(batch, np.float32))).numpy()

    def host_buffer(self, shape, dtype=np.float32):
        if self.device.type != "cuda":
            return np.empty(shape, dtype)
        return self.torch.empty(shape, dtype=self.torch.float32, pin_memory=True).numpy()

    def make_slot(self, index: int, batch: int, chw: tuple[int, int, int]) -> Slot:
        if self.device.type != "cuda":
            return super(DeviceSlots, self).make_slot(index, batch, chw)
        torch = self.torch
        c, h, w = chw
        try:
            host_in = torch.empty((batch, c, h, w), dtype=torch.float32, pin_memory=True)
            host_out = torch.empty((batch, 1, h, w), dtype=torch.float32, pin_memory=True)
            d_in = torch.zeros((batch, c, h, w), dtype=torch.float32, device=self.device)
            d_out = torch.zeros((batch, 1, h, w), dtype=torch.float32, device=self.device)
            events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            state = _SlotState(host_in, host_out, d_in, d_out, *events)
            if self.cuda_graphs:
                state.graph = self._capture(d_in, d_out)
        except torch.cuda.OutOfMemoryError:
            free, total = torch.cuda.mem_get_info(self.device)
            raise DeviceError(f"not enough GPU memory for a batch of {batch} at {h}x{w} ({free / 2**30:.1f} of "
                              f"{total / 2**30:.1f} GiB free): lower --batch-size or the tile batch") from None
        return Slot(index, host_in.numpy(), host_out.numpy(), state)

    def _capture(self, d_in, d_out):
        """One CUDA graph computing d_out from d_in (warm-up on a side stream first, as torch asks)."""
        torch = self.torch
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):
                d_out.copy_(self._forward(d_in))
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self._pool):
            d_out.copy_(self._forward(d_in))
        return graph

    def launch(self, slot: Slot, n: int) -> None:
        if self.device.type != "cuda":
            return super(DeviceSlots, self).launch(slot, n)
        torch = self.torch
        s: _SlotState = slot.state
        m = len(slot.host_in) if self.static_batch else n  # a graph always computes its whole batch
        with torch.cuda.stream(self.h2d):
            s.d_in[:m].copy_(s.host_in[:m], non_blocking=True)
            s.uploaded.record(self.h2d)
        self.compute.wait_event(s.uploaded)
        with torch.inference_mode(), torch.cuda.stream(self.compute):
            s.started.record(self.compute)
            if s.graph is not None:
                s.graph.replay()
            else:
                s.d_out[:n].copy_(self._forward(s.d_in[:n]))
            s.computed.record(self.compute)
        self.d2h.wait_event(s.computed)
        with torch.cuda.stream(self.d2h):
            s.host_out[:n].copy_(s.d_out[:n], non_blocking=True)
            s.downloaded.record(self.d2h)

    def wait(self, slot: Slot) -> float:
        if self.device.type != "cuda":
            return super(DeviceSlots, self).wait(slot)
        s: _SlotState = slot.state
        s.downloaded.synchronize()
        return s.started.elapsed_time(s.computed) / 1000.0
