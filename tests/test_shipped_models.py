"""The models cvmatte ships beside the stock u2netp (engine/models/): u2netp-student, u2netp
distilled from `best` (IS-Net and u2netp combined), the CPU default; and u2netp-product, the
earlier default, u2netp fine-tuned on product composites. The default is what `Matter()` and the
CLI use on a CPU (`best` on a GPU: zoo.default_model); the held-out evaluation that chose it is benchmarks/models.py,
its figures in the README."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cvmatte import Matter
from cvmatte.engine import metrics, zoo
from cvmatte.engine.backends.onnxruntime import cuda_usable
from cvmatte.engine.spec import sha256_file
from cvmatte.samples import load_photo, write_demo_photos

NAME = "u2netp-student"


def test_the_student_is_the_cpu_default_and_runs_through_the_cli(tmp_path):
    assert zoo.DEFAULT_MODEL == NAME and zoo.ZOO[NAME].source == "packaged with cvmatte"
    assert zoo.default_model("cpu") == NAME
    assert Matter(device="cpu").spec.name == NAME
    resolved = zoo.resolve(NAME, tmp_path / "cache")
    assert sha256_file(resolved.path) == resolved.spec.sha256
    photos = write_demo_photos(tmp_path / "in")
    proc = subprocess.run([sys.executable, "-m", "cvmatte", "matte", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                           "-q"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for f in (tmp_path / "out").rglob("*manifest.jsonl") for line in f.read_text().splitlines()]
    assert len(rows) == len(photos) and not any(r["error"] for r in rows)
    assert all(r["model"].startswith(NAME + ":") for r in rows)


@pytest.mark.skipif(not cuda_usable(), reason="needs an NVIDIA GPU that ONNX Runtime can use (onnxruntime-gpu)")
def test_on_a_gpu_the_default_is_best():
    assert zoo.default_model("auto") == zoo.GPU_DEFAULT_MODEL
    assert Matter().spec.name == zoo.GPU_DEFAULT_MODEL


@pytest.mark.parametrize("name", [NAME, "u2netp-product"])
def test_a_shipped_fine_tune_keeps_the_teachers_subject_on_photos_it_never_saw(name):
    """The demo photos are in no training corpus: same subject as the stock u2netp (IoU), and the
    coffee cup still opaque."""
    stock, tuned = Matter("u2netp", device="cpu"), Matter(name, device="cpu")
    ious = [metrics.iou(tuned.matte(load_photo(p)).alpha, stock.matte(load_photo(p)).alpha)
            for p in ("coffee.png", "chelsea.png", "astronaut.png", "motorcycle_left.png")]
    assert np.mean(ious) > 0.9, ious
    cup = tuned.matte(load_photo("coffee.png")).alpha[100:180, 210:360]
    assert cup.mean() > 0.9
