"""benchmarks/models.py on a small held-out set: exact-alpha metrics, the agreement matrix on real
photos, cost figures and contact sheets, for two real models side by side."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cvmatte.benchmarks import models as bench
from cvmatte.samples import write_demo_photos
from cvmatte.distill import data


@pytest.fixture
def heldout(tmp_path):
    root = tmp_path / "heldout"
    (root / "photos").mkdir(parents=True)
    (root / "composites").mkdir()
    for p in write_demo_photos(tmp_path / "demo")[:2]:
        (root / "photos" / f"other_{p.name}").write_bytes(p.read_bytes())
    for i, s in enumerate(data.synthetic(2, seed=7, megapixels=0.1)):
        cv2.imwrite(str(root / "composites" / f"c{i}.png"), cv2.cvtColor(s.rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "composites" / f"c{i}.alpha.png"), np.round(s.alpha * 255).astype(np.uint8))
    return root


def test_models_side_by_side_on_held_out_data(tmp_path, heldout):
    out = tmp_path / "eval"
    report = bench.evaluate(["u2netp", "u2netp-product"], heldout, repeats=2, runs=1, out=out, log=lambda *_: None)
    assert len(report["photos"]) == 2 + 5  # the held-out photos and the demo photos
    assert report["composites"] == ["c0.png", "c1.png"]
    for name in ("u2netp", "u2netp-product"):
        s = report["summary"][name]
        assert 0 < s["comp_sad"] < 100 and 0 < s["comp_iou"] <= 1 and 0 <= s["comp_semi_inside"] <= 1
        assert s["gflop"] == pytest.approx(39.5, rel=0.05) and s["latency_ms"] > 0 and s["images_per_s"] > 0
        sheet = cv2.imread(str(out / f"contact-photos-{name}.png"))
        assert sheet is not None and sheet.shape[1] == 10 * 160
        assert (out / f"contact-composites-{name}.png").is_file()
    # The fine-tune and the stock teacher find the same subjects on photos neither trained on.
    assert report["summary"]["u2netp-product"]["agreement"]["u2netp"]["iou"] > 0.8
    saved = json.loads((out / "models.json").read_text())
    assert saved["summary"].keys() == report["summary"].keys()
    table = (out / "models.md").read_text()
    assert "| u2netp-product |" in table and "end-to-end images/s" in table


def test_missing_held_out_data_says_which_script_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="heldout_photos.sh"):
        bench.held_out(tmp_path / "nothing", tmp_path / "work")
