"""Distillation end to end on the CPU: u2netp teaches a tiny CV-UNet on real photos."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (the export extra)")

from cvmatte import Matter  # noqa: E402
from cvmatte.samples import load_photo, write_demo_photos  # noqa: E402
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
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40, 50, 60]  # step 0: the random start
    assert rows[0]["loss"] is None
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
    said = " ".join(finish.stderr.split())
    assert f"resumed from {run / 'last.pt'} at step" in said
    resumed_at = int(re.search(r"resumed from \S+ at step (\d+)", said).group(1))
    # The kill may land between the checkpoint and its metrics row: the row may be missing, never doubled.
    assert resumed_at in (killed_at[-1], killed_at[-1] + 5)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    after = steps[len(killed_at):]
    assert after and after[0] == resumed_at + 5  # continued from the last checkpoint, nothing redone
    assert steps[-1] == killed_at[-1] + 10
    assert (run / "cvunet-xs.onnx").is_file()


def _at(name, size, spec):
    import cv2

    from cvmatte.engine.preprocess import normalize

    return torch.from_numpy(normalize(cv2.resize(load_photo(name), (size, size), interpolation=cv2.INTER_AREA), spec))[None]


@pytest.mark.slow
def test_pruning_to_a_third_then_refitting_brings_the_subject_back():
    """u2netp pruned to a third of its FLOPs (at 224², the u2netp-s recipe) loses the subject;
    re-fitting every layer to the unpruned one's outputs on three photos brings much of it back on
    two photos the fit never saw (measured: mean IoU against the teacher 0.29 -> 0.52)."""
    pytest.importorskip("torch_pruning", reason="torch-pruning is not installed (the distill extra)")
    from cvmatte.distill.prune import prune_to_flops, reconstruct
    from cvmatte.distill.teacher import torch_teacher
    from cvmatte.engine import metrics
    from cvmatte.engine.nets.cvunet import count_flops

    teacher, spec = torch_teacher("u2netp")
    pruned = prune_to_flops(teacher, (224, 224), 0.33, min_channels=16, reference_flops=count_flops(teacher, (320, 320)),
                            log=lambda *_: None)
    assert count_flops(pruned, (224, 224)) <= count_flops(teacher, (320, 320)) / 3
    fit = torch.cat([_at(n, 224, spec) for n in ("coffee.png", "motorcycle_left.png", "hubble_deep_field.jpg")])
    unseen = torch.cat([_at(n, 224, spec) for n in ("chelsea.png", "astronaut.png")])
    with torch.no_grad():
        reference, before = teacher.eval()(unseen), pruned.eval()(unseen)
    said = []
    refitted = reconstruct(teacher, pruned, fit, log=said.append)
    with torch.no_grad():
        after = refitted(unseen)

    def mean_iou(a):
        return np.mean([metrics.iou(a[i, 0].numpy(), reference[i, 0].numpy()) for i in range(len(a))])

    assert mean_iou(after) > max(0.45, mean_iou(before) + 0.1), (mean_iou(before), mean_iou(after))
    assert "re-fitted 119 convolutions" in said[0]


@pytest.mark.slow
def test_a_pruned_student_trains_resumes_nothing_and_exports_at_its_own_size(tmp_path, photos):
    """`--prune` through the trainer: the pruned, re-fitted U²-Net-p trains, its checkpoint holds
    the pruned architecture, and the exported ONNX runs through the engine at the student's size
    with a spec that says where its weights came from."""
    pytest.importorskip("torch_pruning", reason="torch-pruning is not installed (the distill extra)")
    from cvmatte.engine.onnx_graph import conv_flops

    cfg = DistillConfig(teacher="u2netp", student="u2netp", prune=0.33, name="u2netp-tiny", data=[str(photos)],
                        out=str(tmp_path / "run"), steps=4, size=224, infer_size=224, batch_size=2, lr=3e-5,
                        eval_every=2, synthetic=4)
    result = distill(cfg, log=lambda *_: None, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 4]
    student = Matter(result["onnx"], device="cpu")
    assert student.spec.input_size == (224, 224) and student.spec.name == "u2netp-tiny"
    assert "pruned to at most 33%" in student.spec.source and "started from the weights of u2netp" in student.spec.source
    assert conv_flops(student.model.path, (224, 224)) <= conv_flops(Matter("u2netp", device="cpu").model.path, (320, 320)) / 3
    assert student.matte(load_photo("coffee.png")).alpha.shape == (400, 600)
