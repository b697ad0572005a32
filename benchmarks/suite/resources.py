"""What a run costs the machine while it runs: `ResourceSampler` wraps a with-block and records this
process's peak resident memory (sampled at 50 Hz from /proc), its CPU utilisation (CPU seconds over
wall seconds times usable cores) and, where nvidia-smi is present, the GPU's mean utilisation and
peak memory used (sampled twice a second). The catalog throughput figures carry these numbers.
"""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time

import numpy as np

from cvmatte.benchmarks.suite.config import gpu_name, usable_cores


class ResourceSampler:
    """Peak resident memory (sampled at 50 Hz from /proc) and CPU utilisation of this process
    over a with-block: CPU seconds / (wall seconds x cores); on a machine with nvidia-smi, the
    GPU's mean utilisation and peak memory used, sampled twice a second."""

    gpu_util: float | None = None
    gpu_peak_mib: float | None = None

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0, self._cpu0 = time.perf_counter(), self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.wall = time.perf_counter() - self._t0
        self.cpu_util = (self._cpu() - self._cpu0) / max(1e-9, self.wall * usable_cores())

    def _run(self):
        gpu = [] if gpu_name() else None
        last_gpu = 0.0
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())
            if gpu is not None and time.perf_counter() - last_gpu > 0.5:
                last_gpu = time.perf_counter()
                sample = _nvidia_smi_sample()
                if sample:
                    gpu.append(sample)
        if gpu:
            self.gpu_util = float(np.mean([u for u, _ in gpu])) / 100.0
            self.gpu_peak_mib = float(max(m for _, m in gpu))

    @staticmethod
    def _cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _nvidia_smi_sample() -> tuple[float, float] | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5)
        util, mem = out.stdout.strip().splitlines()[0].split(",")
        return float(util), float(mem)
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None
