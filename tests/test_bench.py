"""`cvmatte bench --quick` in CI's environment: real model, real images, every section filled, our
engine and the rembg-style loop on the same images. (Speed is reported, never asserted.)"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cvmatte.benchmarks.suite import RESULTS, ResourceSampler, machine_slug, measured_peak, results_dir
from cvmatte.engine import metrics


def test_quick_bench_compares_our_engine_with_the_plain_loop(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "cvmatte", "bench", "--quick", "--models", "u2netp", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "quick.json").read_text())
    table = (out / "quick.md").read_text()
    assert table in proc.stdout
    assert "results go to" in proc.stderr and "files to" in proc.stderr  # the log (stderr) says where it wrote

    lat = report["latency"]
    assert {(r["resolution"], r["batch"]) for r in lat} == {(320, 1), (320, 4)}
    for r in lat:
        assert 0 < r["median_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["gflop_per_image"] == pytest.approx(39.5, rel=0.01)  # u2netp's convolutions at 320²
        assert 0 < r["fraction_of_peak"] < 1.5

    through = {r["config"]: r for r in report["throughput"]}
    assert "plain loop (rembg-style), u2netp" in through and "cvmatte u2netp, tiles + guided filter" in through
    assert len({(r["images"], r["megapixels"]) for r in through.values()}) == 1  # the same images for all
    for r in through.values():
        assert r["images_per_s"] > 0 and r["peak_rss_mib"] > 50 and 0 < r["cpu_util"] <= 1.05

    acc = {(r["config"], r["scene"]) for r in report["accuracy"]}
    configs = {c for c, _ in acc}
    assert {"plain loop (rembg-style), u2netp", "cvmatte u2netp, no tiles"} <= configs
    assert len(acc) == len(configs) * 2  # every configuration on both scenes
    summary = {r["config"]: r for r in report["accuracy_summary"]}
    # Tiles with refinement beat the plain loop's upsampled mask at the edge.
    assert summary["cvmatte u2netp, tiles + guided filter"]["grad"] < summary["plain loop (rembg-style), u2netp"]["grad"]
    for name in ("quick_latency_vs_resolution.png", "quick_throughput_vs_batch.png"):
        assert (out / name).stat().st_size > 5000
    assert "plain loop (rembg-style), u2netp" in table and report["machine"]["cores"] >= 1


def test_bench_writes_under_the_current_directory_unless_told(tmp_path, monkeypatch):
    """By default a run writes ./bench-results/<machine>/ where it was started, never into the
    source tree; --out still reaches the committed results folder on purpose."""
    monkeypatch.chdir(tmp_path)
    assert results_dir(None, "cpu-2core-x") == tmp_path.resolve() / "bench-results" / "cpu-2core-x"
    assert RESULTS.resolve() not in results_dir(None, "cpu-2core-x").parents
    assert results_dir("elsewhere", "cpu-2core-x") == tmp_path.resolve() / "elsewhere"
    assert results_dir(RESULTS / "cpu-2core-x", "ignored") == (RESULTS / "cpu-2core-x").resolve()


def test_connectivity_error_follows_the_benchmark_definition():
    gt = np.zeros((100, 100), np.float32)
    gt[20:80, 20:80] = 1.0
    assert metrics.connectivity_error(gt, gt) == 0.0
    blob = gt.copy()
    blob[2:12, 2:12] = 0.9  # 100 px where the truth is 0: level 0, d = 0.9 >= 0.15, phi 0.1 vs 1
    assert metrics.connectivity_error(blob, gt) == pytest.approx(100 * 0.9 / 1000, rel=1e-5)
    faint = gt.copy()
    faint[2:12, 2:12] = 0.1  # under the 0.15 step: counts as connected, no error
    assert metrics.connectivity_error(faint, gt) == 0.0


def test_machine_slug_and_peak():
    assert machine_slug({"gpu": "NVIDIA H100 80GB HBM3", "cpu": "x", "cores": 16}) == "nvidia-h100-80gb-hbm3"
    assert machine_slug({"gpu": None, "cpu": "AMD EPYC 7B13 64-Core Processor", "cores": 2, "isa": "avx2"}) == \
        "cpu-2core-epyc-7b13-avx2"
    assert machine_slug({"gpu": None, "cpu": "AMD EPYC", "cores": 2, "isa": "avx512_vnni"}) == "cpu-2core-epyc-avx512vnni"
    peak = measured_peak(size=512, repeats=2)
    assert peak["cpu_gflops"] > 1 and peak["cpu_gbs"] > 0.5
    with ResourceSampler() as s:
        np.ones(64 * 2 ** 20, np.uint8).sum()
    assert s.peak > 60 * 2 ** 20 and s.wall > 0
