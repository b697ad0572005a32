"""Quality flags on constructed alphas: an empty cut-out is flagged at any size and under any
thresholds; a see-through part inside the object (a glass window, a see-through cap, a whole
see-through bottle) is flagged, while a soft outline, fur and a clear hole are not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cvmatte.engine import quality

T = quality.QualityThresholds()


def disc(h, w, cy, cx, r, soft=1.0):
    """An opaque disc whose edge ramps from 1 to 0 over `soft` pixels."""
    yy, xx = np.mgrid[:h, :w]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip((r - d) / soft + 0.5, 0, 1).astype(np.float32)


def furry_disc(h, w, r, fur, strands=900, seed=0):
    """A disc with a furry outline: thin anti-aliased strands of random length (0.4-1 x fur) and
    tilt, fading towards their tips."""
    rng = np.random.default_rng(seed)
    cy, cx = h / 2, w / 2
    th = rng.uniform(0, 2 * np.pi, strands)
    length = rng.uniform(0.4, 1.0, strands) * fur
    tilt = rng.normal(0, 0.3, strands)
    steps = 6
    layers = []
    for s in range(steps):
        layer = np.zeros((h, w), np.float32)
        for t_, L, k in zip(th, length, tilt):
            ends = []
            for rr in (r - 4 + L * s / steps, r - 4 + L * (s + 1) / steps):
                x = cx + rr * np.cos(t_) - (rr - r) * k * np.sin(t_)
                y = cy + rr * np.sin(t_) + (rr - r) * k * np.cos(t_)
                ends.append((int(x * 16), int(y * 16)))
            cv2.line(layer, ends[0], ends[1], 1.0 - s / steps, 1, cv2.LINE_AA, 4)
        layers.append(layer)
    return np.maximum.reduce([disc(h, w, cy, cx, r, 1.5), *layers])


def bottle(h, w, cap_alpha, soft=2.0):
    """An opaque bottle body with a cap on top of it at `cap_alpha`."""
    yy, xx = np.mgrid[:h, :w]

    def box(x0, x1, y0, y1):
        return np.clip(np.minimum.reduce([xx - x0, x1 - xx, yy - y0, y1 - yy]) / soft + 0.5, 0, 1)

    body = box(0.35 * w, 0.65 * w, 0.3 * h, 0.92 * h)
    cap = box(0.40 * w, 0.60 * w, 0.12 * h, 0.3 * h + soft)
    return np.maximum(body, cap * cap_alpha).astype(np.float32)


def reasons(alpha, thresholds=T):
    return quality.flags(quality.measure(alpha, alpha), thresholds)


def see_through_flagged(alpha):
    return any("see-through" in f for f in reasons(alpha))


# --- empty and near-empty -------------------------------------------------------------------------

@pytest.mark.parametrize("hw", [(1, 1), (20, 20), (33, 500), (100, 100), (2000, 1500)])
def test_an_all_transparent_cut_out_is_flagged_at_any_size(hw):
    flagged = reasons(np.zeros(hw, np.float32))
    assert any("empty cut-out" in f and "no foreground" in f for f in flagged), flagged


def test_an_all_transparent_cut_out_is_flagged_whatever_the_thresholds():
    lax = quality.QualityThresholds.from_dict({"min_foreground": 0.0, "min_object_px": 0})
    assert any("empty cut-out" in f for f in reasons(np.zeros((20, 20), np.float32), lax))
    # A faint ghost (nothing more than half opaque) is as empty as zeros.
    assert any("empty cut-out" in f for f in reasons(np.full((20, 20), 0.3, np.float32), lax))


def test_a_near_empty_cut_out_is_flagged_small_or_large():
    small = np.zeros((20, 20), np.float32)
    small[8:11, 8:11] = 1.0  # 9 px: 2.2% of a 20x20 image, above min_foreground, yet nearly nothing
    assert any("almost no foreground (9 px" in f for f in reasons(small))
    large = np.zeros((2000, 2000), np.float32)
    large[1000:1050, 1000:1050] = 1.0  # 2500 px: 0.06% of the image
    assert any("almost no foreground" in f for f in reasons(large))
    # A product that fills a small image is not empty.
    assert not any("foreground" in f for f in reasons(disc(40, 40, 20, 20, 12)))


# --- see-through parts inside the object ----------------------------------------------------------

def test_a_soft_outline_is_not_a_see_through_part():
    for alpha in (disc(400, 400, 200, 200, 120, soft=25), disc(1000, 1000, 500, 500, 300, soft=25),
                  disc(1000, 1000, 500, 500, 300, soft=60)):
        m = quality.measure(alpha)
        assert m["see_through"] == 0.0 and not see_through_flagged(alpha)


def test_fur_is_not_a_see_through_part():
    """Strands up to 80, 120 and 160 px long around a disc of radius 220 on an 800-px image, sharp
    and blurred (as an upsampled model output would have them): the fringe is semi-transparent and
    wider than the outline's mean width in places, but its alpha climbs from the backdrop inwards."""
    for fur, strands in ((80, 900), (120, 1500), (160, 2500)):
        sharp = furry_disc(800, 800, 220, fur, strands)
        for alpha in (sharp, cv2.GaussianBlur(sharp, (0, 0), 2.0)):
            m = quality.measure(alpha)
            assert m["uncertain"] > 0.1  # the fringe is really semi-transparent
            assert m["see_through"] < T.max_see_through and not see_through_flagged(alpha), (fur, m["see_through"])


def test_a_glass_window_inside_the_object_is_flagged_and_a_clear_hole_is_not():
    outer = disc(600, 600, 300, 300, 200, 2)
    window = disc(600, 600, 300, 300, 80, 2)
    glass = np.where(window > 0.5, 0.4, outer).astype(np.float32)
    m = quality.measure(glass)
    assert m["see_through"] > 0.1
    assert any("see-through part inside the object" in f for f in quality.flags(m, T))
    donut = (outer * (1 - window)).astype(np.float32)  # a real hole: clear, with a soft rim
    assert reasons(donut) == []


def test_a_see_through_cap_is_flagged_and_an_opaque_one_is_not():
    for cap_alpha in (0.3, 0.4, 0.6):
        assert see_through_flagged(bottle(800, 400, cap_alpha)), cap_alpha
    assert see_through_flagged(bottle(600, 600, 0.4))
    assert reasons(bottle(800, 400, 1.0)) == []


def test_a_wholly_see_through_bottle_is_flagged():
    ghost = bottle(800, 400, 1.0) * 0.4
    assert quality.measure(ghost)["see_through"] > 0.5 and see_through_flagged(ghost)


def test_the_see_through_measure_reads_a_shrunk_alpha_the_same_at_any_size():
    """Measured on the alpha shrunk to a 256-pixel side: the same shape at 4x the size measures
    nearly the same."""
    a = bottle(400, 200, 0.4)
    b = bottle(1600, 800, 0.4)
    assert quality.see_through(a) == pytest.approx(quality.see_through(b), abs=0.02)


def test_measures_cached_by_an_older_version_still_give_flags():
    """A cache record written before `object_px` and `see_through` existed: those checks are
    skipped, the others still run."""
    old = quality.measure(disc(400, 400, 380, 200, 150))
    del old["object_px"], old["see_through"]
    assert any("bottom" in f for f in quality.flags(old, T))
    old_empty = quality.measure(np.zeros((50, 50), np.float32))
    del old_empty["object_px"], old_empty["see_through"]
    assert any("no foreground" in f for f in quality.flags(old_empty, T))


def test_thresholds_from_a_file_know_the_new_names():
    t = quality.QualityThresholds.from_dict({"max_see_through": 0.2, "min_object_px": 10})
    assert t.max_see_through == 0.2 and t.min_object_px == 10
    with pytest.raises(ValueError, match="max_see_through"):
        quality.QualityThresholds.from_dict({"max_seethrough": 0.2})
