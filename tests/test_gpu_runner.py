"""The device pipeline (engine/gpu/runner.py) against the CPU runner: on the CPU its torch code runs
on CPU tensors (the logic is the same on CUDA); on a GPU the same comparison runs on CUDA."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cvmatte import Matter  # noqa: E402
from cvmatte.samples import write_demo_photos  # noqa: E402

WHEN = datetime(2026, 1, 1, 1, 1, 1)


def compare(device: str, tmp_path: Path):
    photos = write_demo_photos(tmp_path / "in")
    (tmp_path / "in" / "broken.jpg").write_bytes(photos[0].read_bytes()[:500])
    with Matter("u2netp", backend="torch", device=device, batch_size=2) as m:
        m.device_pipeline = True
        on_device = m.matte_files([tmp_path / "in"], tmp_path / "device", when=WHEN, alpha=True)
        stages = dict(m.last_stage_s)
        m.device_pipeline = False
        on_cpu = m.matte_files([tmp_path / "in"], tmp_path / "cpu", when=WHEN, alpha=True)
    a = {Path(r.input).name: r for r in on_device.rows}
    b = {Path(r.input).name: r for r in on_cpu.rows}
    assert a.keys() == b.keys()
    assert {k: r.ok for k, r in a.items()} == {k: r.ok for k, r in b.items()}
    assert not a["broken.jpg"].ok and "broken.jpg" in a["broken.jpg"].error
    for name, r in a.items():
        if not r.ok:
            continue
        x = cv2.imread(r.outputs["rgba"], cv2.IMREAD_UNCHANGED).astype(np.int16)
        y = cv2.imread(b[name].outputs["rgba"], cv2.IMREAD_UNCHANGED).astype(np.int16)
        assert x.shape == y.shape
        # Tiles against one whole-image guided filter: close, not equal (measured: at most 0.45 levels).
        assert np.abs(x[..., 3] - y[..., 3]).mean() < 1.0, name
        soft = (y[..., 3] > 0)
        assert np.abs(x[..., :3] - y[..., :3])[soft].mean() < 2.0, name
        alpha = cv2.imread(r.outputs["alpha"], cv2.IMREAD_UNCHANGED)
        assert np.array_equal(alpha, x[..., 3])
    assert stages["model"] > 0 and stages["finish"] > 0


def test_device_pipeline_matches_the_cpu_runner_on_cpu_tensors(tmp_path):
    compare("cpu", tmp_path)


@pytest.mark.gpu
def test_device_pipeline_matches_the_cpu_runner_on_cuda(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    compare("cuda", tmp_path)
