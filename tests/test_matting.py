"""The engine on real photos and on synthetic composites with exact alpha."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from cvmatte import Matter
from cvmatte.samples import load_photo, make_composite
from cvmatte.engine import metrics, tiling
from cvmatte.engine.matting import dequantize, quantize
from cvmatte.engine.refine import estimate_foreground, guided_filter

from .conftest import region_mean


def test_coffee_cup_is_foreground_and_table_corners_are_not(matter, coffee):
    r = matter.matte(coffee)
    assert r.alpha.shape == coffee.shape[:2] and r.alpha.dtype == np.float32
    assert r.rgba.shape == (*coffee.shape[:2], 4) and r.rgba.dtype == np.uint8
    assert region_mean(r.alpha, 0.25, 0.45, 0.35, 0.60) > 0.95  # the crema, inside the cup
    assert region_mean(r.alpha, 0.0, 0.10, 0.85, 1.0) < 0.05  # the wooden table, top right
    assert region_mean(r.alpha, 0.90, 1.0, 0.0, 0.10) < 0.05  # bottom left


def test_motorcycle_body_inside_garage_outside(matter):
    photo = load_photo("motorcycle_left.png")
    r = matter.matte(photo)
    assert region_mean(r.alpha, 0.40, 0.55, 0.30, 0.55) > 0.8  # tank and seat
    assert region_mean(r.alpha, 0.0, 0.15, 0.0, 1.0) < 0.1  # shelves on the wall


def plain_pass(session_path, spec, rgb):
    """What rembg does, written independently: resize to 320, run, resize back."""
    x = cv2.resize(rgb, spec.input_size[::-1], interpolation=cv2.INTER_AREA if rgb.shape[0] > 320 else cv2.INTER_LINEAR)
    x = (x.astype(np.float32) / 255.0 - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    s = ort.InferenceSession(str(session_path), providers=["CPUExecutionProvider"])
    out = s.run([spec.output_name], {spec.input_name: x.transpose(2, 0, 1)[None]})[0][0, 0]
    return np.clip(cv2.resize(out, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR), 0, 1)


@pytest.mark.parametrize("size", [(320, 320), (240, 300), (100, 64)])
def test_image_no_larger_than_model_input_is_exactly_the_plain_pass(matter, coffee, size):
    h, w = size
    rgb = cv2.resize(coffee, (w, h), interpolation=cv2.INTER_AREA)
    # ONNX Runtime in fp32, as the plain pass runs: this is about the path, not the precision.
    tiled = Matter(matter.model.path, "onnxruntime", device="cpu", precision="fp32", tile=True, despill=0).matte(rgb)
    untiled = Matter(matter.model.path, "onnxruntime", device="cpu", precision="fp32", tile=False, despill=0).matte(rgb)
    assert tiled.tiles == 0
    np.testing.assert_array_equal(tiled.alpha, untiled.alpha)
    # The result is on the 8-bit grid the PNG holds: within half a level of the plain pass.
    np.testing.assert_allclose(tiled.alpha, plain_pass(matter.model.path, matter.spec, rgb), atol=0.5 / 255 + 1e-4)


def test_batched_images_equal_one_at_a_time(matter):
    photos = [load_photo(n) for n in ("coffee.png", "chelsea.png", "rocket.jpg")]
    together = Matter("u2netp", device="cpu", batch_size=3).engine.matte_many(photos)  # one batch of 3
    for photo, r in zip(photos, together):
        np.testing.assert_allclose(r.alpha, matter.engine.matte(photo).alpha, atol=1e-5)


@pytest.fixture(scope="module")
def composite():
    return make_composite(megapixels=4.0, seed=1, bg_photo="motorcycle_left.png")


def test_high_resolution_edges_beat_the_upsampled_coarse_alpha(matter, composite):
    c = composite
    r = matter.engine.matte(c.rgb)
    band = metrics.edge_band(c.alpha, 8)
    coarse_sad = metrics.sad(r.coarse, c.alpha, band)
    tiled_sad = metrics.sad(r.alpha, c.alpha, band)
    coarse_grad = metrics.gradient_error(r.coarse, c.alpha, band)
    tiled_grad = metrics.gradient_error(r.alpha, c.alpha, band)
    assert r.tiles > 0
    assert tiled_sad < 0.9 * coarse_sad, (tiled_sad, coarse_sad)
    assert tiled_grad < 0.8 * coarse_grad, (tiled_grad, coarse_grad)
    assert metrics.iou(r.alpha, c.alpha) > 0.95
    # Outside the band the coarse alpha decides, untouched.
    outside = ~r.band
    np.testing.assert_array_equal(r.alpha[outside], dequantize(quantize(r.coarse[outside])))


def test_tiles_cover_the_boundary_not_the_area(matter, composite):
    c = composite
    s = dataclasses.replace(matter.settings, tile_size=512)  # tiles small enough to leave some out at 4 MP
    r = matter.engine.matte(c.rgb, settings=s)
    H, W = c.alpha.shape
    size = s.tile_size
    stride = size - s.tile_overlap
    grid = len(tiling._starts(H, size, stride)) * len(tiling._starts(W, size, stride))
    assert 0 < r.tiles < grid
    assert r.band_fraction < 0.3
    # A plain backdrop with the same photo's size has no boundary and so costs no tiles.
    flat = np.full_like(c.rgb, 200)
    assert matter.engine.matte(flat).tiles == 0


def test_plan_tiles_is_one_size_covers_the_band_and_skips_empty_images():
    band = np.zeros((1000, 1500), bool)
    assert tiling.plan_tiles(band, 256, 32) == []
    band[400:420, 100:1400] = True  # a horizontal edge
    tiles = tiling.plan_tiles(band, 256, 32)
    assert {(t.y1 - t.y0, t.x1 - t.x0) for t in tiles} == {(256, 256)}
    covered = np.zeros_like(band)
    for t in tiles:
        covered[t.slices] = True
    assert covered[band].all()
    assert covered.mean() < 0.5
    with pytest.raises(ValueError, match="overlap"):
        tiling.plan_tiles(band, 256, 128)


def test_blend_of_agreeing_tiles_reproduces_them_without_seams():
    rng = np.random.default_rng(0)
    coarse = rng.random((300, 400)).astype(np.float32)
    truth = rng.random((300, 400)).astype(np.float32)
    band = np.ones((300, 400), bool)
    tiles = tiling.plan_tiles(band, 128, 32)
    out = tiling.blend(coarse, band.astype(np.float32), tiles, [truth[t.slices] for t in tiles], 32)
    np.testing.assert_allclose(out, truth, atol=1e-5)


def test_one_tile_over_the_whole_image_blends_as_the_general_path():
    """The shortcut for a single whole-image tile gives the general blend's values exactly (the
    same tile twice takes the general path: equal weights, the same mean)."""
    rng = np.random.default_rng(1)
    coarse, refined = (rng.random((300, 400)).astype(np.float32) for _ in range(2))
    weight = np.clip(rng.random((300, 400)).astype(np.float32) * 2 - 0.5, 0, 1)
    whole = [tiling.Tile(0, 0, 300, 400)]
    np.testing.assert_array_equal(tiling.blend(coarse, weight, whole, [refined], 32),
                                  tiling.blend(coarse, weight, whole * 2, [refined] * 2, 32))


def test_guided_filter_keeps_constants_and_snaps_to_a_colour_edge():
    guide = np.zeros((64, 64, 3), np.float32)
    guide[:, 32:] = 1.0
    np.testing.assert_allclose(guided_filter(guide, np.full((64, 64), 0.3, np.float32), 4, 1e-3), 0.3, atol=1e-4)
    # A coarse alpha blurred over 12 pixels, filtered with a radius that spans the blur.
    blurry = np.clip((np.arange(64, dtype=np.float32) - 26) / 12, 0, 1)[None].repeat(64, 0)
    sharp = guided_filter(guide, blurry, 10, 1e-4)
    step = (np.arange(64) >= 32).astype(np.float32)
    assert (sharp[:, 32] - sharp[:, 31]).min() > 0.5  # the ramp became a step where the colour changes
    assert np.abs(sharp - step)[:, 20:44].mean() < 0.9 * np.abs(blurry - step)[:, 20:44].mean()


def test_foreground_estimation_removes_the_background_colour():
    rng = np.random.default_rng(0)
    h, w = 120, 160
    fg = np.zeros((h, w, 3), np.float32) + [0.9, 0.1, 0.1]  # a red product
    bg = np.zeros((h, w, 3), np.float32) + [0.1, 0.2, 0.9]  # on a blue backdrop
    alpha = np.clip((np.arange(w, dtype=np.float32) - 60) / 8, 0, 1)[None].repeat(h, 0)  # an 8-pixel soft edge
    img = fg * alpha[..., None] + bg * (1 - alpha[..., None])
    rgb = np.clip(img * 255 + rng.normal(0, 1, img.shape) + 0.5, 0, 255).astype(np.uint8)
    soft = (alpha > 0.05) & (alpha < 0.95)
    est = estimate_foreground(rgb, alpha, 1.0).astype(np.float32) / 255
    before = np.abs(rgb.astype(np.float32) / 255 - fg)[soft].mean()
    after = np.abs(est - fg)[soft].mean()
    assert after < 0.2 * before, (after, before)
    np.testing.assert_array_equal(estimate_foreground(rgb, alpha, 0.0), rgb)


def test_foreground_runs_of_columns_give_the_whole_strips_result(monkeypatch):
    """Two products side by side, 1000 px apart: each strip's soft pixels sit in two runs of
    columns, worked apart; the result is the same bytes as one run over the whole width. Pixels
    of alpha <= 4/255 keep the photo's colour."""
    from cvmatte.engine import refine

    c = make_composite(2.0, seed=3, fg_photo="coffee.png", bg_photo="astronaut.png")
    h, w = c.alpha.shape
    rgb = np.concatenate([c.rgb, c.rgb[:, ::-1]], axis=1)
    alpha = np.concatenate([c.alpha, c.alpha[:, ::-1]], axis=1)
    alpha = dequantize(quantize(alpha))
    alpha[:40, :40] = 3 / 255  # a faint haze
    runs = []
    column_runs = refine._column_runs
    monkeypatch.setattr(refine, "_column_runs", lambda *a: runs.append(column_runs(*a)) or runs[-1])
    split = refine.estimate_foreground(rgb, alpha, 1.0)
    assert max(len(r) for r in runs) >= 2
    monkeypatch.setattr(refine, "_column_runs", lambda cols, halo, gap: [(0, len(cols))])
    whole = refine.estimate_foreground(rgb, alpha, 1.0)
    np.testing.assert_array_equal(split, whole)
    assert (split != rgb).any()
    np.testing.assert_array_equal(split[:40, :40], rgb[:40, :40])


def test_guided_filter_decides_only_where_the_coarse_alpha_hesitates(matter, composite):
    """Unweighted, the filter's fit smeared alpha into sure background and foreground across the
    band: the weighted finish must be closer to the exact alpha over the whole image, leave sure
    coarse pixels as they were and still sharpen the edge against the coarse alpha."""
    c = composite
    weighted = matter.engine.matte(c.rgb)
    plain = Matter("u2netp", device="cpu", guided_confidence_weighted=False).engine.matte(c.rgb)
    np.testing.assert_array_equal(weighted.coarse, plain.coarse)
    assert metrics.sad(weighted.alpha, c.alpha) < metrics.sad(plain.alpha, c.alpha)
    sure = ((weighted.coarse < 1e-3) | (weighted.coarse > 1 - 1e-3)) & weighted.band
    assert sure.mean() > 0.01  # part of the band: where the unweighted filter moved sure pixels
    assert np.abs(plain.alpha - plain.coarse)[sure].max() > 0.1
    assert np.abs(weighted.alpha - weighted.coarse)[sure].max() <= 2 / 255
    edge = metrics.edge_band(c.alpha, 8)
    assert metrics.gradient_error(weighted.alpha, c.alpha, edge) < 0.8 * metrics.gradient_error(weighted.coarse, c.alpha, edge)
