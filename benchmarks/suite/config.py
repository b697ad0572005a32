"""The run's settings and the machine it runs on: `BenchConfig` (models, backends, devices,
precisions, resolutions, batches, repeats and the sizes of the catalog and accuracy sets, with the
`--quick` preset), the machine's description recorded with every report (CPU model and widest vector
extension, usable cores, memory, GPU, library versions, ONNX Runtime providers), the folder name
derived from it, and where a run writes (`results_dir`): ./bench-results/<machine>/ under the current
directory unless told otherwise, so that a run never writes into the source tree by default. The
committed results live under benchmarks/results/<machine>/ (`RESULTS`): write there on purpose, with
`cvmatte bench --out benchmarks/results/<machine>`. Nothing here is timed.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: The committed results (in the source tree); a run writes here only when asked to (--out).
RESULTS = Path(__file__).resolve().parent.parent / "results"
#: Where a run writes by default: this folder under the current directory, then the machine's name.
DEFAULT_OUT = "bench-results"


@dataclass
class BenchConfig:
    quick: bool = False
    models: list[str] = field(default_factory=lambda: ["u2netp"])
    backends: list[str] = field(default_factory=lambda: ["onnxruntime", "openvino"])
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16", "fp16", "int8"])
    resolutions: list[int] = field(default_factory=lambda: [320, 512, 768])
    batches: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    repeats: int = 10
    accuracy_megapixels: list[float] = field(default_factory=lambda: [1.0, 4.0, 16.0])
    scenes: int = 3
    catalog_composites: int = 12
    catalog_megapixels: float = 2.0
    out: Path | None = None

    @classmethod
    def quick_config(cls, **overrides) -> "BenchConfig":
        """Under two minutes on a 2-core CPU: one model at its own size in fp32 and in the INT8
        that runs by default (OpenVINO's gated file; no export is run), small sets."""
        base = dict(quick=True, precisions=["fp32", "int8"], resolutions=[320], batches=[1, 4], repeats=8,
                    accuracy_megapixels=[1.0], scenes=2, catalog_composites=3, catalog_megapixels=1.0)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "isa": cpu_isa(), "cpu_flags": cpu_flags(), "cores": usable_cores(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1),
            "gpu": gpu_name(), "python": platform.python_version(), "platform": platform.platform(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    import cv2
    import onnx
    import onnxruntime as ort

    import cvmatte

    info["versions"] = {"cvmatte": cvmatte.__version__, "onnxruntime": ort.__version__, "onnx": onnx.__version__,
                        "numpy": np.__version__, "opencv": cv2.__version__}
    try:
        import openvino

        info["versions"]["openvino"] = openvino.__version__
        info["openvino_cpu"] = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except ImportError:
        pass
    info["onnxruntime_providers"] = ort.get_available_providers()
    return info


def usable_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


#: The CPU features that decide which precision runs fast (recorded with every result: the hosts differ).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_fp16")


def cpu_flags() -> list[str]:
    """Which of SPEED_FLAGS this CPU has (/proc/cpuinfo)."""
    try:
        flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return []
    return [f for f in SPEED_FLAGS if f in flags]


def cpu_isa() -> str:
    """The widest vector extension the CPU has (the development machines differ: AVX2 or AVX-512)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.machine()
    for isa in ("amx_tile", "avx512_vnni", "avx512f", "avx2", "neon", "asimd"):
        if isa in flags:
            return isa.replace("_tile", "").replace("avx512f", "avx512")
    return platform.machine()


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def results_dir(out: str | Path | None, slug: str) -> Path:
    """The folder a run writes into: `out` when given, else ./bench-results/<slug>/ under the
    current directory (absolute, so that the log says exactly where)."""
    return (Path(out) if out else Path.cwd() / DEFAULT_OUT / slug).resolve()


def machine_slug(info: dict) -> str:
    """A folder name for the machine: the GPU's name, or cpu-<cores>core-<model>-<vector ISA>."""
    if info.get("gpu"):
        return re.sub(r"[^a-z0-9]+", "-", info["gpu"].lower()).strip("-")
    words = [w for w in re.sub(r"[^a-z0-9 ]+", " ", info["cpu"].lower()).split()
             if w not in {"amd", "intel", "r", "tm", "cpu", "processor", "core", "with", "radeon", "graphics"}]
    isa = info.get("isa", "").replace("_", "")
    return "-".join(x for x in [f"cpu-{info['cores']}core", *words[:2], isa] if x)
