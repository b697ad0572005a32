"""torch backend: the project's torch networks (CV-UNet and U²-Net-p checkpoints, and U²-Net-p and
IS-Net ported from their ONNX files) on a CUDA GPU where TensorRT is not
installed, eager or through CUDA graphs, FP32, FP16 or BF16, optionally through torch.compile; on
the CPU, FP32, or BF16 where the CPU has AVX-512 BF16 or AMX (oneDNN, channels-last), eager or
compiled.

On CUDA it drives the same ring as the TensorRT backend: page-locked host tensors per slot,
device tensors per slot, and three streams (upload, compute, download) ordered by events, so the
copies of neighbouring batches overlap compute. With CUDA graphs each slot captures one graph
for its fixed batch shape (the model's kernels launched by one call; the batcher pads batches to
full size); the graphs share one memory pool, which is safe because they replay one after
another on the compute stream, and each copies its result into its slot's own output tensor
inside the graph, so the next replay cannot overwrite a result still being downloaded.

torch.compile (`compile=True`) compiles the module once per input shape (dynamic=False: each
shape gets kernels specialised to it, which CUDA graphs need anyway). The first call at a shape
is the compile; it happens when a slot is made (or at the first batch of that shape) and its
seconds are kept in `compile_s`. Batches are then launched full (the batcher pads them), so a
ring sees one shape per slot size and never compiles in the middle of a run. Where inductor
cannot work (no C++ compiler for the CPU, no triton for CUDA, or a compile error) the backend
says so in the log and runs eager.

`infer(x)` runs a batch that is already on the device (the GPU pipeline's decode and resize
left it there) and returns the alpha on the device.

torch is imported only when this backend is created: `import cvmatte` never loads it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..batching import Slot
from ..errors import DeviceError, ModelError
from ..spec import ModelSpec, ResolvedModel
from .base import DeviceSlots

log = logging.getLogger("cvmatte")

PRECISIONS = ("fp32", "fp16", "bf16")


def _import_torch():
    try:
        import torch
    except ImportError:
        raise DeviceError("--backend torch needs torch: pip install 'cvmatte[torch]'") from None
    return torch


def _why_no_compile(torch, cuda: bool) -> str | None:
    """Why torch.compile's inductor cannot work here, or None when it can (as far as one can tell
    without compiling: a compile error is still caught at the first call)."""
    try:
        if cuda:
            from torch.utils._triton import has_triton

            return None if has_triton() else "triton is not installed (inductor needs it for CUDA)"
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as e:  # no C++ compiler, or an inductor without these helpers
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no details'}"
    return None


def _cpu_has_bf16(torch) -> bool:
    """The CPU has bf16 arithmetic oneDNN uses (AVX-512 BF16, or AMX tiles)."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


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


def _shape_name(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


class TorchBackend(DeviceSlots):
    name = "torch"

    def __init__(self, module, spec: ModelSpec, device: str = "auto", precision: str = "fp32",
                 cuda_graphs: bool = False, threads: int | None = None, allow_cpu_fallback: bool = False,
                 max_batch: int = 16, compile: bool = False):
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
        cpu_bf16 = not use_cuda and precision == "bf16" and _cpu_has_bf16(torch)
        if not use_cuda and ((precision != "fp32" and not cpu_bf16) or cuda_graphs):
            what = precision.upper() if precision != "fp32" else "CUDA graphs"
            where = "on CUDA, and BF16 on CPUs with AVX-512 BF16 or AMX" if precision == "bf16" else "on CUDA only"
            if not self.fell_back:
                raise DeviceError(f"the torch backend runs {what} {where}; on this CPU use fp32 without graphs")
            precision, cuda_graphs = "fp32", False
        if use_cuda and precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise DeviceError(f"{torch.cuda.get_device_name()} has no BF16 arithmetic (it needs an Ampere or newer "
                              "GPU): use --precision fp16")
        self.precision = precision
        self.cuda_graphs = cuda_graphs
        #: Seconds of torch.compile per input shape [N, C, H, W], each compiled once.
        self.compile_s: dict[tuple[int, ...], float] = {}
        #: Why compile=True runs eager after all (None when it compiles, or was not asked for).
        self.compile_error: str | None = None
        self._compile_lock = threading.Lock()
        # A compiled module is specialised per shape: launch batches full, as for graphs.
        self.static_batch = cuda_graphs or compile
        self.max_batch = max_batch
        self.device = torch.device("cuda" if use_cuda else "cpu")
        self.on_gpu = use_cuda
        if threads and not use_cuda:
            torch.set_num_threads(threads)
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        module = module.eval().to(self.device, dtype)
        # channels-last: cuDNN's and oneDNN's fast kernels read NHWC (u2netp on a 2-core EPYC:
        # fp32 352 -> 276 ms; benchmarks/NOTES.md).
        module = module.to(memory_format=torch.channels_last)
        if use_cuda:
            self.h2d, self.compute, self.d2h = (torch.cuda.Stream(self.device) for _ in range(3))
            self._pool = torch.cuda.graph_pool_handle() if cuda_graphs else None
            self.providers = [f"torch {torch.__version__} CUDA {torch.version.cuda}", torch.cuda.get_device_name(self.device)]
        else:
            self.providers = [f"torch {torch.__version__} CPU"]
        self.module = module
        self._dtype = dtype
        self._graphs: dict[tuple[int, ...], tuple] = {}  # infer's graphs, per shape
        self._net = module
        self.compile = compile
        if compile:
            why = _why_no_compile(torch, use_cuda)
            if why:
                self._no_compile(why)
            else:
                self._net = torch.compile(module, dynamic=False)

    @classmethod
    def from_model(cls, model: ResolvedModel, *, device: str = "auto", threads: int | None = None,
                   allow_cpu_fallback: bool = False, precision: str = "fp32", cuda_graphs: bool = False,
                   max_batch: int = 16, compile: bool = False) -> "TorchBackend":
        """Checkpoints (`.pt` from `cvmatte distill` / `cvmatte finetune`: CV-UNets and U²-Net-p,
        pruned or not) and U²-Net-p ONNX files (the default model) and IS-Net ones (isnet-general-use),
        ported to torch from the file's own weights. precision: fp32, fp16 or bf16 (both CUDA only);
        compile: torch.compile."""
        kwargs = dict(device=device, precision=precision, cuda_graphs=cuda_graphs, threads=threads,
                      allow_cpu_fallback=allow_cpu_fallback, max_batch=max_batch, compile=compile)
        path = Path(model.path)
        _import_torch()
        if path.suffix == ".pt":
            from ..nets.checkpoint import load_checkpoint

            module, spec, _ = load_checkpoint(path)
            return cls(module, spec, **kwargs)
        from ..nets.isnet import port_from_onnx

        try:
            module = port_from_onnx(path)  # U²-Net-p or IS-Net, by the file's convolutions
        except ValueError as e:
            raise ModelError(f"the torch backend runs cvmatte checkpoints (.pt) and U²-Net-p and IS-Net ONNX files; "
                             f"{e}. Use --backend onnxruntime for this model") from None
        return cls(module, model.spec, **kwargs)

    def describe(self) -> str:
        compiled = self._net is not self.module
        mode = " + ".join(["torch.compile"] * compiled + ["CUDA graphs"] * self.cuda_graphs) or "eager"
        fb = " (fell back to CPU)" if self.fell_back else ""
        text = f"torch {mode} {self.precision} on {' / '.join(self.providers)}{fb}"
        if compiled and self.compile_s:
            text += "; compiled " + ", ".join(f"{_shape_name(k)} in {v:.1f} s" for k, v in self.compile_s.items())
        elif self.compile and not compiled:
            text += f"; torch.compile not used ({self.compile_error})"
        return text

    def _no_compile(self, why: str) -> None:
        self.compile_error = why
        self._net = self.module
        log.warning("torch.compile cannot run here (%s): the torch backend runs the model eager", why)

    def _forward(self, x):
        x = x.to(self._dtype, memory_format=self.torch.channels_last)
        return self._net(x).float()

    def _warm(self, x) -> None:
        """The first call of the compiled module at x's shape (the compile itself), timed into
        compile_s; later shapes seen again cost nothing. A compile error turns compile off."""
        if self._net is self.module:
            return
        key = tuple(x.shape)
        with self._compile_lock:
            if key in self.compile_s or self._net is self.module:
                return
            t0 = time.perf_counter()
            try:
                with self.torch.inference_mode():
                    self._forward(x)
                if self.device.type == "cuda":
                    self.torch.cuda.synchronize(self.device)
            except Exception as e:  # inductor's errors (C++ or triton compile, lowering) vary by version
                text = str(e).strip().splitlines()
                self._no_compile(f"compiling for input {_shape_name(key)} failed: {type(e).__name__}: "
                                 f"{text[0] if text else 'no details'}")
                return
            self.compile_s[key] = time.perf_counter() - t0
            log.info("torch.compile: input %s compiled in %.1f s", _shape_name(key), self.compile_s[key])

    # CPU: the synchronous path, HostSlots drives it through the batcher.
    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.device.type == "cuda":
            return super().run(batch)
        x = self.torch.from_numpy(np.ascontiguousarray(batch, np.float32))
        self._warm(x)
        with self.torch.inference_mode():
            return self._forward(x).numpy()

    def infer(self, x):
        """x: float32 [N, C, H, W] on this backend's device, normalised as the spec says -> alpha
        float32 [N, 1, H, W] on the device (no copy to the host). Up to max_batch per call of the
        model; with CUDA graphs one graph per batch shape, captured at its first use."""
        torch = self.torch
        outs = []
        with torch.inference_mode():
            for i in range(0, len(x), self.max_batch):
                part = x[i:i + self.max_batch]
                if self.cuda_graphs and self.device.type == "cuda":
                    outs.append(self._replay(part))
                else:
                    self._warm(part)
                    outs.append(self._forward(part))
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return torch.sigmoid(out) if self.spec.output_activation == "sigmoid" else out

    def _replay(self, part):
        torch = self.torch
        key = tuple(part.shape)
        if key not in self._graphs:
            d_in = torch.zeros(key, dtype=torch.float32, device=self.device)
            d_out = torch.zeros((key[0], 1, *key[2:]), dtype=torch.float32, device=self.device)
            self._warm(d_in)
            # Their own pool: these replay on the caller's stream, not in the ring's order.
            pool = self.__dict__.setdefault("_infer_pool", torch.cuda.graph_pool_handle())
            self._graphs[key] = (d_in, d_out, self._capture(d_in, d_out, pool))
        d_in, d_out, graph = self._graphs[key]
        d_in.copy_(part)
        graph.replay()
        return d_out.clone()  # the next replay overwrites d_out

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
            self._warm(d_in)
            if self.cuda_graphs:
                state.graph = self._capture(d_in, d_out)
        except torch.cuda.OutOfMemoryError:
            free, total = torch.cuda.mem_get_info(self.device)
            raise DeviceError(f"not enough GPU memory for a batch of {batch} at {h}x{w} ({free / 2**30:.1f} of "
                              f"{total / 2**30:.1f} GiB free): lower --batch-size or the tile batch") from None
        return Slot(index, host_in.numpy(), host_out.numpy(), state)

    def _capture(self, d_in, d_out, pool=None):
        """One CUDA graph computing d_out from d_in (warm-up on a side stream first, as torch asks)."""
        torch = self.torch
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):
                d_out.copy_(self._forward(d_in))
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=pool if pool is not None else self._pool):
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
            else:  # a compiled module also gets the whole batch: the shape it was compiled for
                s.d_out[:m].copy_(self._forward(s.d_in[:m]))
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
