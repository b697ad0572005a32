"""A distilled student against its teacher, side by side in one run: FLOPs, CPU latency at the
model's size, and agreement (IoU, SAD, mean |Δalpha|) on images the student never saw.

Held-out images: the photos the trainer held out (the first of the sorted demo photos) and
synthetic product shots with seeds the trainer never drew (100+).

    python -m cvmatte.benchmarks.student_vs_teacher [--student cvunet-s] [--teacher u2netp] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from cvmatte import Matter
from cvmatte.benchmarks.samples import SCENES, make_composite, write_demo_photos
from cvmatte.engine import metrics
from cvmatte.engine.imageio import read_image
from cvmatte.engine.preprocess import coarse_input

U2NETP_GFLOP = 39.5


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="cvunet-s")
    ap.add_argument("--teacher", default="u2netp")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    teacher = Matter(args.teacher, device="cpu", despill=0.0)
    student = Matter(args.student, device="cpu", despill=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        photos = sorted(write_demo_photos(tmp))[:1]
        images = [read_image(p).rgb for p in photos]
    images += [make_composite(1.0, seed=100 + i, fg_photo=f, bg_photo=b).rgb for i, (f, b) in enumerate(SCENES * 2)]

    times = {"teacher": [], "student": []}
    inputs = {}
    for name, m in (("teacher", teacher), ("student", student)):
        inputs[name] = coarse_input(images[0], m.spec)[None]
        m.backend.run(inputs[name])
    for _ in range(args.repeats):
        for name, m in (("teacher", teacher), ("student", student)):
            t0 = time.perf_counter()
            m.backend.run(inputs[name])
            times[name].append(time.perf_counter() - t0)
    ious, sads, diffs = [], [], []
    for im in images:
        a_t, a_s = teacher.matte(im).alpha, student.matte(im).alpha
        ious.append(metrics.iou(a_s, a_t))
        sads.append(metrics.sad(a_s, a_t))
        diffs.append(float(np.abs(a_s - a_t).mean()))
    try:
        from cvmatte.distill.cvunet import build, count_flops

        gflop = count_flops(build(args.student), student.spec.input_size) / 1e9
    except ImportError:
        gflop = float("nan")
    t_ms, s_ms = np.median(times["teacher"]) * 1000, np.median(times["student"]) * 1000
    print(f"\n{args.student} vs {args.teacher}, ONNX Runtime CPU, batch 1, median of {args.repeats}; "
          f"agreement on {len(images)} held-out images (whole pipeline, tiles on)")
    print("| model | GFLOP | median ms | IoU vs teacher | SAD vs teacher | mean abs diff |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.teacher} (teacher) | {U2NETP_GFLOP:.1f} | {t_ms:.0f} | - | - | - |")
    print(f"| {args.student} | {gflop:.2f} ({U2NETP_GFLOP / gflop:.1f}x fewer) | {s_ms:.0f} ({t_ms / s_ms:.1f}x lower) | "
          f"{np.mean(ious):.3f} (min {np.min(ious):.3f}) | {np.mean(sads):.2f} | {np.mean(diffs):.4f} |")
    if args.out:
        args.out.write_text(json.dumps({"machine": platform.uname()._asdict(), "teacher_ms": t_ms, "student_ms": s_ms,
                                        "gflop": gflop, "iou": ious, "sad": sads, "mean_abs": diffs}, indent=2))


if __name__ == "__main__":
    main()
