"""OpenVINO backend: the field's engine for Intel (and AMD) CPUs, Intel iGPUs and NPUs. It reads
the same ONNX files and specs as ONNX Runtime.

Precision is OpenVINO's inference-precision hint: fp32, bf16 (CPUs with AVX-512 BF16 or AMX) or
fp16 (Intel GPUs and NPUs, CPUs with AMX-FP16); an INT8 file (Q/DQ nodes from `cvmatte export
--precision int8`) runs its quantized layers in int8 and the rest at the hint. A precision the
device has no arithmetic for is refused, never run as fp32 under another name: OpenVINO itself
would quietly fall back. What really runs is read back from the compiled model and said by
`describe()`.

A model is compiled once per input shape (static shapes are OpenVINO's fast path on the CPU);
compiled shapes are kept, the oldest dropped past MAX_SHAPES, and OpenVINO's own model cache
(CACHE_DIR, under the cvmatte cache) keeps compiled blobs across processes. Compiling u2netp takes
about 0.25 s.

`openvino` is imported only when this backend is created.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import DeviceError, ModelError
from ..spec import ResolvedModel
from .base import HostSlots, activate

#: --precision -> OpenVINO's inference precision hint. int8 is not a hint: it is in the file.
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
#: The device capability (OPTIMIZATION_CAPABILITIES) each reduced precision needs.
CAPABILITY = {"bf16": "BF16", "fp16": "FP16"}
#: cvmatte's device names -> OpenVINO's. "gpu" and "npu" are Intel devices, passed through.
DEVICE_NAMES = {"auto": "CPU", "cpu": "CPU", "gpu": "GPU", "npu": "NPU"}
#: Compiled input shapes kept at once (the coarse pass has one; a tile refiner a few).
MAX_SHAPES = 8


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise DeviceError("--backend openvino needs OpenVINO: pip install openvino (or reinstall cvmatte)") from None
    return openvino


def capabilities(device: str = "CPU") -> list[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of a device (e.g. ['BF16', 'FP32', 'INT8', ...]); none
    where the device is absent."""
    core = import_openvino().Core()
    if not any(d.split(".")[0] == device for d in core.available_devices):
        return []
    return list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))


def onnx_node_name(layer: str) -> str:
    """The ONNX node an OpenVINO layer came from: OpenVINO splits a biased Conv into the
    convolution "<node>/WithoutBiases" and its Add "<node>" (torch's exporter names nodes like
    "/decoder.4/dec.2/Conv", so the name is not cut at the first slash)."""
    return layer.removesuffix("/WithoutBiases")


def keep_fp32(core, model, names) -> object:
    """The model with the named layers (ONNX node names; OpenVINO may add a suffix such as
    "/WithoutBiases") kept in fp32 under a reduced inference precision. OpenVINO does that for a
    node whose rt_info holds its "precise" attribute, which its Python API cannot create; the
    attribute survives an IR round trip, so the model is written as IR with it on those layers and
    read back."""
    import re
    import tempfile

    import openvino as ov

    wanted = set(names)
    with tempfile.TemporaryDirectory(prefix="cvmatte-ov-") as tmp:
        xml_path = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
        found: set[str] = set()

        def mark(m: re.Match) -> str:
            name = onnx_node_name(m.group(1))
            if name not in wanted:
                return m.group(0)
            found.add(name)
            return m.group(0) + '<rt_info><attribute name="precise" version="0"/></rt_info>'

        xml = re.sub(r'<layer id="\d+" name="([^"]*)" type="[^"]*" version="[^"]*">', mark, xml_path.read_text())
        if wanted - found:
            raise ModelError(f"fp32_layers names layers the model does not have: {', '.join(sorted(wanted - found)[:5])}")
        xml_path.write_text(xml)
        return core.read_model(str(xml_path))


def int8_exact_here() -> bool:
    """The CPU multiplies int8 with VNNI or AMX (32-bit sums). Without it, x86 int8 kernels use
    VPMADDUBSW, whose 16-bit sums of 8-bit weights may saturate: a model gated on a VNNI CPU could
    compute something else there. Read from /proc/cpuinfo; False where that is not available."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return False
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def _precision_name(ov_type) -> str:
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(str(ov_type.get_type_name()), str(ov_type))


class OpenVinoBackend(HostSlots):
    name = "openvino"

    def __init__(self, model: ResolvedModel, device: str = "cpu", threads: int | None = None,
                 precision: str = "fp32", cache_dir: str | Path | None = None):
        ov = import_openvino()
        if precision not in HINTS:
            raise DeviceError(f"--backend openvino runs --precision {', '.join(HINTS)} (an int8 model is an ONNX "
                              f"file with Q/DQ nodes from `cvmatte export --precision int8`); got {precision!r}")
        if device not in DEVICE_NAMES:
            raise DeviceError(f"--device {device}: OpenVINO runs on cpu, and on Intel's gpu or npu where present; "
                              "NVIDIA GPUs are for --backend onnxruntime, torch or tensorrt")
        self.spec = model.spec
        core = ov.Core()
        self.device = DEVICE_NAMES[device]
        present = core.available_devices  # e.g. ['CPU', 'GPU.0', 'GPU.1', 'NPU']
        if not any(d.split(".")[0] == self.device for d in present):
            raise DeviceError(f"--device {device}: OpenVINO finds no {self.device} here (it has {', '.join(present)})")
        self.device_name = core.get_property(self.device, "FULL_DEVICE_NAME")
        caps = core.get_property(self.device, "OPTIMIZATION_CAPABILITIES")
        if precision in CAPABILITY and CAPABILITY[precision] not in caps:
            raise DeviceError(f"{self.device_name} has no {precision} arithmetic that OpenVINO can use (its "
                              f"capabilities: {', '.join(caps)}): use --precision fp32")
        if cache_dir is None:
            from ..zoo import cache_dir as default_cache

            cache_dir = default_cache()
        try:
            core.set_property({"CACHE_DIR": str(Path(cache_dir) / "openvino")})
        except Exception:  # a read-only cache folder: compile every time instead
            pass
        try:
            self._model = core.read_model(str(model.path))
        except Exception as e:  # OpenVINO raises RuntimeError with the parser's message
            raise ModelError(f"{model.path}: OpenVINO cannot read it ({str(e).strip().splitlines()[0]})") from None
        if precision != "fp32" and self.spec.fp32_layers:
            self._model = keep_fp32(core, self._model, self.spec.fp32_layers)
        self._core = core
        self._config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        self.requested_precision = precision
        self.max_batch = None if self.spec.dynamic_batch else 1
        self.providers = [f"OpenVINO {ov.__version__} {self.device}", self.device_name]
        self.fell_back = False
        self._input = self._model.inputs[0].any_name
        self._compiled: OrderedDict[tuple[int, ...], tuple[object, object, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()
        # Compile the model's own size now: errors surface at load, and describe() can say what runs.
        h, w = self.spec.input_size
        self.precision = self._request((1, self.spec.in_channels, h, w))[0]

    @classmethod
    def from_model(cls, model: ResolvedModel, *, device: str = "auto", threads: int | None = None,
                   allow_cpu_fallback: bool = False, precision: str = "fp32", cuda_graphs: bool = False,
                   compile: bool = False) -> "OpenVinoBackend":
        """create_backend's entry. cuda_graphs and compile are other backends' options: refused."""
        if cuda_graphs or compile:
            raise DeviceError("--cuda-graphs and --compile are torch options; OpenVINO compiles the model itself")
        return cls(model, device=device, threads=threads, precision=precision)

    def _request(self, shape: tuple[int, ...]):
        """(precision used, infer request, its lock) for this input shape, compiled at first use."""
        with self._lock:
            hit = self._compiled.get(shape)
            if hit is not None:
                self._compiled.move_to_end(shape)
                return hit
            m = self._model.clone()
            m.reshape({self._input: list(shape)})
            compiled = self._core.compile_model(m, self.device, self._config)
            used = _precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
            hit = (used, compiled.create_infer_request(), threading.Lock())
            self._compiled[shape] = hit
            while len(self._compiled) > MAX_SHAPES:
                self._compiled.popitem(last=False)
            return hit

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.max_batch is not None and batch.shape[0] > self.max_batch:
            return np.concatenate([self.run(batch[i:i + self.max_batch]) for i in range(0, len(batch), self.max_batch)])
        x = np.ascontiguousarray(batch, np.float32)
        _, request, lock = self._request(tuple(x.shape))
        with lock:  # an infer request runs one call at a time
            request.infer({self._input: x}, share_inputs=True)
            out = np.array(request.get_tensor(self.spec.output_name).data, np.float32)
        return activate(out, self.spec)

    def describe(self) -> str:
        what = self.precision
        if self.spec.precision == "int8":
            what = f"int8 (Q/DQ from the file; float layers in {self.precision})"
        threads = self._config.get("INFERENCE_NUM_THREADS")
        return f"openvino {what} on {self.device} ({self.device_name})" + (f", {threads} threads" if threads else "")
