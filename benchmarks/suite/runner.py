"""The whole run, in order: describe the machine and pick its results folder, measure its peak,
resolve the model variants and catalog configurations, then time latency and catalog throughput
(on temporary files), measure accuracy, and write the report. `run` returns the report as a dict
with the paths of the files it wrote under "files".
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from cvmatte.benchmarks.suite.accuracy import accuracy, summarize_accuracy
from cvmatte.benchmarks.suite.config import BenchConfig, machine_info, machine_slug, results_dir
from cvmatte.benchmarks.suite.latency import latency
from cvmatte.benchmarks.suite.peak import measured_peak
from cvmatte.benchmarks.suite.report import write as write_report
from cvmatte.benchmarks.suite.throughput import throughput
from cvmatte.benchmarks.suite.variants import catalog_configs, model_variants, modelscope_peer
from cvmatte.samples import write_demo_photos


def run(cfg: BenchConfig, log=print) -> dict:
    info = machine_info()
    slug = machine_slug(info)
    out = results_dir(cfg.out, slug)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"machine {slug}: {info['cpu']}, {info['cores']} cores, GPU {info['gpu'] or 'none'}")
    log(f"results go to {out}")
    peak = measured_peak()
    log(f"peak {peak['cpu_gflops']:.0f} GFLOP/s, {peak['cpu_gbs']:.1f} GB/s")
    variants = model_variants(cfg, out / "models", log)
    configs = catalog_configs(cfg)
    with tempfile.TemporaryDirectory(prefix="cvmatte-bench-") as tmp:
        tmp = Path(tmp)
        image = np.asarray(Image.open(write_demo_photos(tmp / "one")[0]).convert("RGB"))
        report = {"slug": slug, "machine": info, "peak": peak,
                  "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
                  "latency": latency(cfg, variants, peak, image, log),
                  "throughput": throughput(cfg, configs, tmp, log)}
    acc = accuracy(cfg, configs, variants, log)
    report.update(accuracy=acc, accuracy_summary=summarize_accuracy(acc), modelscope=modelscope_peer(),
                  seconds=time.perf_counter() - t0)
    name = "quick" if cfg.quick else "full"
    report["files"] = write_report(report, out, name, log)
    log(f"wrote {len(report['files'])} files to {out} in {report['seconds']:.0f} s: "
        f"{', '.join(Path(f).name for f in report['files'])}")
    return report
