"""Distillation end to end on the CPU: u2netp teaches a tiny CV-UNet on real photos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (the export extra)")

from cvmatte import Matter  # noqa: E402
from cvmatte.benchmarks.samples import load_photo, write_demo_photos  # noqa: E402
from cvmatte.distill.trainer import DistillConfig, distill  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    write_demo_photos(folder)
    return folder


def test_a_short_distillation_lowers_the_held_out_error_and_exports(tmp_path, photos):
    cfg = DistillConfig(teacher="u2netp", student="cvunet-xs", data=[str(photos)], out=str(tmp_path / "run"),
                        steps=60, size=128, batch_size=4, eval_every=10, synthetic=6)
    result = distill(cfg, log=lambda *_: None, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    assert min(r["score"] for r in rows[-3:]) < rows[0]["score"]
    assert {"teacher_sad", "teacher_iou", "exact_sad", "exact_grad", "exact_mse"} <= set(rows[0])
    # The teacher's labels are cached: a second run labels nothing anew.
    assert len(list((tmp_path / "run" / "labels").glob("*.png"))) == 5
    student = Matter(result["onnx"], device="cpu")
    assert student.spec.mean == Matter("u2netp", device="cpu").spec.mean
    assert student.matte(load_photo("coffee.png")).alpha.shape == (400, 600)


def test_killed_run_resumes_where_it_stopped(tmp_path, photos):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "cvmatte", "distill", "--student", "cvunet-xs", "--data", str(photos), "-o", str(run),
            "--steps", "400", "--size", "96", "--batch-size", "2", "--eval-every", "5", "--synthetic", "4"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (run / "metrics.jsonl").is_file():
            time.sleep(0.5)
        time.sleep(2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert killed_at and killed_at[-1] < 400
    assert not list(run.glob("*.part"))  # the kill left no half-written checkpoint
    finish = subprocess.run(args[:-8] + ["--steps", str(killed_at[-1] + 10), "--size", "96", "--batch-size", "2",
                                         "--eval-every", "5", "--synthetic", "4", "--resume"],
                            capture_output=True, text=True, timeout=300)
    assert finish.returncode == 0, finish.stderr
    assert f"resumed from {run / 'last.pt'} at step" in " ".join(finish.stderr.split())
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    after = steps[len(killed_at):]
    assert after and after[0] == killed_at[-1] + 5  # continued from the last checkpoint, nothing redone
    assert steps[-1] == killed_at[-1] + 10
    assert (run / "cvunet-xs.onnx").is_file()
