"""The model cvmatte ships as its default beside the stock u2netp: u2netp-product, u2netp
fine-tuned on product composites (engine/models/). It is what `Matter()` and the CLI use, it runs
through `cvmatte matte` and keeps the stock teacher's notion of the subject on photos it never
saw (the held-out evaluation that chose it is benchmarks/models.py; its figures are in the
README)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from cvmatte import Matter
from cvmatte.samples import load_photo, write_demo_photos
from cvmatte.engine import metrics, zoo

NAME = "u2netp-product"


def test_the_fine_tune_is_the_default_and_runs_through_the_cli(tmp_path):
    assert zoo.DEFAULT_MODEL == NAME and zoo.ZOO[NAME].source == "packaged with cvmatte"
    assert Matter(device="cpu").spec.name == NAME
    photos = write_demo_photos(tmp_path / "in")
    proc = subprocess.run([sys.executable, "-m", "cvmatte", "matte", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                           "-q"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for f in (tmp_path / "out").rglob("*manifest.jsonl") for line in f.read_text().splitlines()]
    assert len(rows) == len(photos) and not any(r["error"] for r in rows)


def test_the_fine_tune_keeps_the_teachers_subject_on_photos_it_never_saw():
    """The demo photos are in no training corpus: same subject as the stock u2netp (IoU), and the
    coffee cup still opaque."""
    stock, tuned = Matter("u2netp", device="cpu"), Matter(NAME, device="cpu")
    ious = [metrics.iou(tuned.matte(load_photo(p)).alpha, stock.matte(load_photo(p)).alpha)
            for p in ("coffee.png", "chelsea.png", "astronaut.png", "motorcycle_left.png")]
    assert np.mean(ious) > 0.9, ious
    cup = tuned.matte(load_photo("coffee.png")).alpha[100:180, 210:360]
    assert cup.mean() > 0.9
