"""ONNX -> TensorRT engine, following the current TensorRT Python API (10.x and 11.x).

Build: Builder -> network (flags 0: explicit batch is the only mode since TRT 10; strongly typed
from the ONNX graph, since TRT 11 has no precision flags and TRT 10 deprecated them in 10.12) ->
OnnxParser -> one optimization profile for the batch -> timing cache -> build_serialized_network.
Precision therefore comes from the ONNX file itself (fp16 graph, int8 Q/DQ graph).

Engines are tied to one GPU and one TensorRT version: each is saved with a metadata JSON, and
`check_engine_compatible` refuses a mismatch with a clear message. tensorrt is imported only here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import DeviceError
from ..imageio import atomic_write_bytes
from ..spec import ModelSpec


@dataclass(frozen=True)
class EngineMeta:
    tensorrt: str
    gpu: str
    compute_capability: str
    min_batch: int
    opt_batch: int
    max_batch: int
    #: The largest (height, width) the profile takes (the input size unless built with max_hw).
    input_size: tuple[int, int]
    onnx_sha256: str


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise DeviceError(
            "building a TensorRT engine needs the tensorrt Python package: install it from NVIDIA's index "
            "(pip install tensorrt-cu12 or tensorrt-cu13) or use JetPack's; or ship the bundle and build on the device"
        ) from None
    return trt


def current_gpu() -> tuple[str, str]:
    """(name, 'major.minor') of CUDA device 0, through cuda-python."""
    from ..cuda_host import device_name_and_capability

    return device_name_and_capability(0)


def check_engine_compatible(meta: EngineMeta, tensorrt_version: str, gpu: str, compute_capability: str) -> None:
    """Refuse an engine built by another TensorRT or for another GPU, saying which and what to do."""
    problems = []
    if meta.tensorrt != tensorrt_version:
        problems.append(f"built with TensorRT {meta.tensorrt}, this machine has {tensorrt_version}")
    if meta.compute_capability != compute_capability or meta.gpu != gpu:
        problems.append(f"built for {meta.gpu} (sm {meta.compute_capability}), this GPU is {gpu} (sm {compute_capability})")
    if problems:
        raise DeviceError("TensorRT engine does not fit this machine: " + "; ".join(problems) +
                          ". Rebuild it here from the ONNX file: cvmatte export MODEL.onnx -o DIR --trt")


def build_engine(onnx_path: Path, spec: ModelSpec, engine_path: Path, max_batch: int = 8, opt_batch: int | None = None,
                 timing_cache: Path | None = None, workspace_gib: float = 4.0,
                 max_hw: tuple[int, int] | None = None) -> EngineMeta:
    """One optimization profile: batch 1..max_batch at the spec's input size; with max_hw (models
    with dynamic height/width, such as tile refiners) height and width range from size_multiple to
    max_hw, optimised for the input size."""
    trt = _import_tensorrt()
    import hashlib

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DeviceError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    h, w = spec.input_size
    opt_batch = opt_batch or max_batch
    profile = builder.create_optimization_profile()
    lo_h, lo_w = (spec.size_multiple, spec.size_multiple) if max_hw and spec.dynamic_hw else (h, w)
    hi_h, hi_w = max_hw if max_hw and spec.dynamic_hw else (h, w)
    profile.set_shape(spec.input_name, (1, spec.in_channels, lo_h, lo_w), (opt_batch, spec.in_channels, h, w),
                      (max_batch, spec.in_channels, hi_h, hi_w))
    config.add_optimization_profile(profile)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeviceError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    atomic_write_bytes(Path(engine_path), bytes(serialized))
    if timing_cache:
        atomic_write_bytes(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    gpu, cc = current_gpu()
    meta = EngineMeta(trt.__version__, gpu, cc, 1, opt_batch, max_batch, (hi_h, hi_w),
                      hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest())
    atomic_write_bytes(Path(engine_path).with_suffix(".engine.json"), json.dumps(asdict(meta), indent=2).encode())
    return meta


def load_engine_meta(engine_path: Path) -> EngineMeta:
    d = json.loads(Path(engine_path).with_suffix(".engine.json").read_text())
    d["input_size"] = tuple(d["input_size"])
    return EngineMeta(**d)


def trtexec_command(onnx_path: str, spec: ModelSpec, max_batch: int = 8) -> str:
    h, w = spec.input_size
    c = spec.in_channels
    name = spec.input_name
    return (f"trtexec --onnx={onnx_path} --saveEngine={Path(onnx_path).with_suffix('.engine')} "
            f"--minShapes={name}:1x{c}x{h}x{w} --optShapes={name}:{max_batch}x{c}x{h}x{w} "
            f"--maxShapes={name}:{max_batch}x{c}x{h}x{w} --timingCacheFile=timing.cache --stronglyTyped")
