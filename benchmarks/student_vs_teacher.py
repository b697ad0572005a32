"""A distilled student against its teacher, side by side in one run: FLOPs, CPU latency at the
model's size, and agreement (IoU, SAD, mean |Δalpha|) on images the student never saw.

Held-out images:
- the demo photos (scikit-image's coffee, chelsea, rocket, astronaut, motorcycle), which are in no
  training corpus of ours;
- with --corpus, the photos and composites the trainer held out of that corpus (every 5th of each,
  distill/data.is_held_out); composites also score both models against their exact alpha.

    python -m cvmatte.benchmarks.student_vs_teacher [--student cvunet-s] [--teacher u2netp] \
        [--corpus corpus/] [--repeats 20] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from cvmatte import Matter
from cvmatte.samples import write_demo_photos
from cvmatte.engine import metrics
from cvmatte.engine.imageio import read_image
from cvmatte.engine.onnx_graph import conv_flops
from cvmatte.engine.preprocess import coarse_input


def held_out_sets(corpus: Path | None, holdout: float) -> dict[str, list[tuple[np.ndarray, np.ndarray | None]]]:
    """name -> [(rgb, exact alpha or None)]."""
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"demo photos": [(read_image(p).rgb, None) for p in sorted(write_demo_photos(tmp))]}
    if corpus is not None:
        from cvmatte.distill.data import alpha_file, is_held_out, list_photos

        paths = list_photos([corpus])
        photos = [p for p in paths if not alpha_file(p).is_file()]
        composites = [p for p in paths if alpha_file(p).is_file()]
        sets["corpus photos (held out)"] = [(read_image(p).rgb, None) for i, p in enumerate(photos)
                                            if is_held_out(i, holdout)]
        sets["corpus composites (held out)"] = [
            (read_image(p).rgb, cv2.imread(str(alpha_file(p)), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255)
            for i, p in enumerate(composites) if is_held_out(i, holdout)]
    return sets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="cvunet-s")
    ap.add_argument("--teacher", default="u2netp")
    ap.add_argument("--corpus", type=Path, default=None, help="the training corpus, to score its held-out part")
    ap.add_argument("--holdout", type=float, default=0.2, help="the trainer's --holdout")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    teacher = Matter(args.teacher, device="cpu", despill=0.0)
    student = Matter(args.student, device="cpu", despill=0.0)
    sets = held_out_sets(args.corpus, args.holdout)

    first = sets["demo photos"][0][0]
    times = {"teacher": [], "student": []}
    inputs = {}
    for name, m in (("teacher", teacher), ("student", student)):
        inputs[name] = coarse_input(first, m.spec)[None]
        m.backend.run(inputs[name])
    for _ in range(args.repeats):
        for name, m in (("teacher", teacher), ("student", student)):  # interleaved: load drift hits both
            t0 = time.perf_counter()
            m.backend.run(inputs[name])
            times[name].append(time.perf_counter() - t0)
    gflop = conv_flops(student.model.path, student.spec.input_size) / 1e9
    teacher_gflop = conv_flops(teacher.model.path, teacher.spec.input_size) / 1e9
    t_ms, s_ms = np.median(times["teacher"]) * 1000, np.median(times["student"]) * 1000
    print(f"\n{args.student} vs {args.teacher}: ONNX Runtime CPU, batch 1 at {student.spec.input_size[0]}², "
          f"median of {args.repeats}")
    print("| model | GFLOP | median ms |")
    print("|---|---|---|")
    print(f"| {args.teacher} (teacher) | {teacher_gflop:.1f} | {t_ms:.0f} |")
    print(f"| {args.student} | {gflop:.2f} ({teacher_gflop / gflop:.1f}x fewer) | {s_ms:.0f} ({t_ms / s_ms:.1f}x lower) |")

    print("\nagreement with the teacher on held-out images (whole pipeline, tiles on); exact-alpha IoU where known")
    print("| held-out set | images | IoU vs teacher (mean, min) | SAD vs teacher | mean abs diff | "
          "IoU vs exact: teacher / student |")
    print("|---|---|---|---|---|---|")
    results = {}
    for set_name, items in sets.items():
        rows = []
        for rgb, exact in items:
            a_t, a_s = teacher.matte(rgb).alpha, student.matte(rgb).alpha
            row = {"iou": metrics.iou(a_s, a_t), "sad": metrics.sad(a_s, a_t), "mean_abs": float(np.abs(a_s - a_t).mean())}
            if exact is not None:
                row.update(teacher_iou_exact=metrics.iou(a_t, exact), student_iou_exact=metrics.iou(a_s, exact))
            rows.append(row)
        results[set_name] = rows
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        exact_txt = (f"{mean['teacher_iou_exact']:.3f} / {mean['student_iou_exact']:.3f}"
                     if "student_iou_exact" in mean else "-")
        print(f"| {set_name} | {len(rows)} | {mean['iou']:.3f} ({min(r['iou'] for r in rows):.3f}) | "
              f"{mean['sad']:.2f} | {mean['mean_abs']:.4f} | {exact_txt} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": platform.uname()._asdict(), "teacher": args.teacher,
                                        "student": args.student, "teacher_ms": t_ms, "student_ms": s_ms,
                                        "teacher_ms_all": times["teacher"], "student_ms_all": times["student"],
                                        "student_gflop": gflop, "teacher_gflop": teacher_gflop, "sets": results},
                                       indent=1))


if __name__ == "__main__":
    main()
