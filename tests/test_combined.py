"""Combined models (engine/backends/combined.py): members as data, one coarse pass for the engine
and every front door."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cvmatte import Matter
from cvmatte.engine.errors import ModelError
from cvmatte.engine.spec import ModelSpec
from cvmatte.samples import load_photo


def _combined(tmp_path, rule: str, members=("u2netp", "u2netp-product"), size=(320, 320)):
    path = tmp_path / f"pair-{rule}.json"
    ModelSpec(name=f"pair-{rule}", input_size=size, input_name="rgb", output_name="alpha", mean=(0.0, 0.0, 0.0),
              std=(1.0, 1.0, 1.0), extra={"members": list(members), "rule": rule}).save(path)
    return path


@pytest.mark.parametrize("rule, combine", [("mean", lambda a, b: (a + b) / 2), ("max", np.maximum),
                                           ("primary", lambda a, b: np.where(np.abs(a - 0.5) > 0.3, a, (a + b) / 2)),
                                           ("sure-union", lambda a, b: np.where(
                                               b > 0.8, np.maximum(np.where(np.abs(a - 0.5) > 0.3, a, (a + b) / 2), b),
                                               np.where(np.abs(a - 0.5) > 0.3, a, (a + b) / 2)))])
def test_combined_coarse_pass_is_the_rule_over_the_members_own_passes(tmp_path, rule, combine):
    photos = [load_photo(n) for n in ("coffee.png", "rocket.jpg")]
    pair = Matter(_combined(tmp_path, rule), "onnxruntime", "cpu", precision="fp32")
    a = Matter("u2netp", "onnxruntime", "cpu", precision="fp32")
    b = Matter("u2netp-product", "onnxruntime", "cpu", precision="fp32")
    assert "combined (" + rule in pair.describe() and "u2netp-product" in pair.describe()
    for photo in photos:
        ca, cb = a.engine.coarse([photo])[0], b.engine.coarse([photo])[0]
        got = pair.engine.coarse([photo])[0]  # the combined alpha, then each member's
        assert got.shape == (3, 320, 320)
        np.testing.assert_allclose(got[0], combine(ca, cb), atol=2e-5)
        np.testing.assert_allclose(got[1], ca, atol=2e-5)
        np.testing.assert_allclose(got[2], cb, atol=2e-5)
    assert not np.allclose(a.engine.coarse([photos[1]])[0], b.engine.coarse([photos[1]])[0], atol=0.05)


def test_combined_model_runs_through_the_file_pipeline_and_keys_the_cache_on_its_members(tmp_path):
    pair = Matter(_combined(tmp_path, "mean"), "onnxruntime", "cpu", precision="fp32")
    other = Matter(_combined(tmp_path, "max"), "onnxruntime", "cpu", precision="fp32")
    assert pair.model_id != other.model_id  # the rule is part of what the cache keys on
    src = tmp_path / "in"
    src.mkdir()
    from PIL import Image

    Image.fromarray(load_photo("coffee.png")).save(src / "coffee.png")
    report = pair.matte_files([src], tmp_path / "out")
    assert len(report.succeeded) == 1 and report.rows[0].model == pair.model_id
    rgba = np.asarray(Image.open(next((tmp_path / "out").rglob("*.png"))))
    assert rgba.shape[2] == 4 and rgba[..., 3].max() == 255 and rgba[..., 3].min() == 0


def test_a_bad_combined_spec_is_refused_in_one_line(tmp_path):
    path = _combined(tmp_path, "median")
    with pytest.raises(ModelError, match="rule 'median' is none of"):
        Matter(path, "onnxruntime", "cpu")
    d = json.loads(path.read_text())
    d["extra"] = {"members": ["u2netp"], "rule": "mean"}
    path.write_text(json.dumps(d))
    with pytest.raises(ModelError, match="at least two members"):
        Matter(path, "onnxruntime", "cpu")
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        Matter(_combined(tmp_path, "mean", members=("u2netp", "no-such-model")), "onnxruntime", "cpu")


def test_members_that_disagree_send_the_cut_out_to_review(tmp_path):
    """u2netp with a model that takes every dark pixel for foreground: on a dark product over a
    light sweep they agree, on a light product over a dark backdrop they do not, and only that
    row is flagged "models disagree"."""
    from PIL import Image

    from .test_catalog import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny")
    pair = Matter(_combined(tmp_path, "mean", members=("u2netp", str(tiny))), "onnxruntime", "cpu", precision="fp32")
    src = tmp_path / "in"
    src.mkdir()
    yy, xx = np.mgrid[:400, :400]
    bottle = ((xx - 200) / 70) ** 2 + ((yy - 210) / 140) ** 2 < 1
    for name, product, backdrop in (("dark_on_white", 25, 240), ("white_on_black", 240, 15)):
        img = np.where(bottle[..., None], product, backdrop).astype(np.uint8).repeat(3, axis=2)
        Image.fromarray(img).save(src / f"{name}.png")
    report = pair.matte_files([src], tmp_path / "out")
    flags = {row.input.rsplit("/", 1)[-1]: " ".join(row.flags) for row in report.rows}
    assert "models disagree" not in flags["dark_on_white.png"]
    assert "models disagree" in flags["white_on_black.png"]
