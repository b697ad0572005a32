"""Page-locked host memory, device buffers, streams and events through cuda-python.

cuda-python (`cuda.bindings`) is NVIDIA's maintained binding and what TensorRT's own samples use
since 10.13/10.14; it ships prebuilt wheels, where pycuda must be compiled against a local CUDA
toolkit. Imported only by the GPU backends: `import cvmatte` never loads it.

Every call returns (error, value...); `check` turns an error into a DeviceError that says what
to do, with the cases users meet named: no GPU, a driver older than the CUDA runtime, no memory.
"""

from __future__ import annotations

import ctypes
import weakref

import numpy as np

from .errors import DeviceError


def _runtime():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise DeviceError("the GPU backends need cuda-python: pip install 'cvmatte[trt]' (or 'cvmatte[gpu]')") from None
    return cudart


def check(result, what: str):
    """result: the tuple a cuda-python call returns. -> its value(s); raises DeviceError on an error."""
    cudart = _runtime()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise DeviceError(f"{what}: {explain(err)}")
    return values[0] if len(values) == 1 else tuple(values)


def explain(err) -> str:
    cudart = _runtime()
    e = cudart.cudaError_t
    if err == e.cudaErrorInsufficientDriver:
        _, runtime = cudart.cudaRuntimeGetVersion()
        _, driver = cudart.cudaDriverGetVersion()
        if not driver:
            return "no NVIDIA driver is installed (no usable GPU on this machine)"
        return (f"the NVIDIA driver is too old for this CUDA runtime (driver supports CUDA {_version(driver)}, "
                f"runtime is {_version(runtime)}): update the driver or install a cuda-python/TensorRT built for "
                f"CUDA {_version(driver)}")
    if err == e.cudaErrorNoDevice:
        return "no CUDA GPU on this machine"
    if err == e.cudaErrorMemoryAllocation:
        free, total = memory_info()
        return (f"out of GPU memory ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free): lower --batch-size or "
                "the tile batch")
    _, name = cudart.cudaGetErrorName(err)
    _, text = cudart.cudaGetErrorString(err)
    return f"{name.decode() if isinstance(name, bytes) else name}: {text.decode() if isinstance(text, bytes) else text}"


def _version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}" if v else "none"


def memory_info() -> tuple[int, int]:
    cudart = _runtime()
    err, free, total = cudart.cudaMemGetInfo()
    return (int(free), int(total)) if err == cudart.cudaError_t.cudaSuccess else (0, 0)


def device_name_and_capability(device: int = 0) -> tuple[str, str]:
    cudart = _runtime()
    count = check(cudart.cudaGetDeviceCount(), "looking for a CUDA GPU")
    if count < 1:
        raise DeviceError("no CUDA GPU on this machine")
    props = check(cudart.cudaGetDeviceProperties(device), "reading the GPU's properties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00 "), f"{props.major}.{props.minor}"


def pinned_empty(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A numpy array in page-locked host memory (freed when the array is collected)."""
    cudart = _runtime()
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    ptr = check(cudart.cudaMallocHost(nbytes), f"allocating {nbytes / 2**20:.1f} MiB of page-locked host memory")
    raw = (ctypes.c_byte * nbytes).from_address(int(ptr))
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    weakref.finalize(raw, cudart.cudaFreeHost, ptr)
    return array


class DeviceBuffer:
    def __init__(self, nbytes: int):
        cudart = _runtime()
        self.nbytes = nbytes
        self.ptr = int(check(cudart.cudaMalloc(nbytes), f"allocating {nbytes / 2**20:.1f} MiB on the GPU"))
        self._free = weakref.finalize(self, cudart.cudaFree, self.ptr)


def new_stream():
    cudart = _runtime()
    return check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "creating a CUDA stream")


def new_event():
    cudart = _runtime()
    return check(cudart.cudaEventCreate(), "creating a CUDA event")


def copy_async(dst: int, src: int, nbytes: int, kind: str, stream) -> None:
    cudart = _runtime()
    kinds = {"h2d": cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, "d2h": cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost}
    check(cudart.cudaMemcpyAsync(dst, src, nbytes, kinds[kind], stream), f"copying {kind}")


def record(event, stream) -> None:
    check(_runtime().cudaEventRecord(event, stream), "recording a CUDA event")


def stream_wait(stream, event) -> None:
    check(_runtime().cudaStreamWaitEvent(stream, event, 0), "ordering CUDA streams")


def event_sync(event) -> None:
    check(_runtime().cudaEventSynchronize(event), "waiting for the GPU")


def elapsed_s(start, end) -> float:
    return float(check(_runtime().cudaEventElapsedTime(start, end), "reading GPU timing")) / 1000.0
