"""Quality flags from one alpha: which cut-outs a person should look at.

Every measure is read off the alpha (and the coarse pass it was refined from), so it costs a few
milliseconds and needs no ground truth:

- empty: no pixel more than half opaque, or fewer than `min_object_px` of them, whatever the
  image's size and whatever the share thresholds say (an all-transparent cut-out is always flagged);
- foreground fraction: almost nothing (the model missed the product) or almost everything (it
  took the backdrop);
- border contact: the object runs off the frame (a cropped product, or background taken as
  foreground);
- components: the product split into several sizeable pieces, or stray blobs beside it;
- uncertain share: how much of the object is semi-transparent (a hesitant model, or real glass);
- see-through part: the largest patch of semi-transparent alpha lying deeper inside the object than
  its soft outline is wide and staying low there (a bottle or a cap the model made see-through, a
  glass window), as a share of the object; a soft outline, hair or fur climbs from the backdrop
  inwards and does not count;
- edge width: the soft transition's mean width across the outline, in pixels per 1000 px of the
  image's long side (a blurred, upsampled edge);
- agreement: IoU of the coarse pass and the refined alpha (tiles that changed the object itself,
  not just its edge);
- members' agreement (combined models only): the lowest IoU between two members' coarse alphas;
  where two models that fail on different photos disagree, at least one of them is wrong.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from . import metrics


@dataclass(frozen=True)
class QualityThresholds:
    #: Fewer pixels than this above alpha 0.5 is an empty cut-out at any image size (a 10x10 patch);
    #: none at all is always flagged, even with this set to 0.
    min_object_px: int = 100
    min_foreground: float = 0.02
    max_foreground: float = 0.90
    #: A side counts as touched when foreground covers more than this share of it.
    border_touch: float = 0.10
    #: Pieces of the foreground above `min_component` of its area each count as one component.
    max_components: int = 2
    min_component: float = 0.01
    max_uncertain: float = 0.25
    #: Largest see-through patch inside the object, as a share of the object (`see_through`).
    #: Chosen on u2netp's outputs of the 5 demo photos, 60 held-out photos and 60 held-out
    #: composites, and on the composites' 60 true alphas (furry tails included): the true alphas
    #: measure <= 0.014, the cut-outs no other flag sends to review <= 0.030 (coffee 0.00), the
    #: spray bottle whose trigger head came out see-through 0.061; constructed see-through caps
    #: 0.075-0.10, a glass window 0.16, long fur <= 0.043.
    max_see_through: float = 0.05
    #: u2netp's clean cut-outs of the demo photos measure 15-22; its doubtful ones 34-39.
    max_edge_width: float = 25.0
    min_agreement: float = 0.85
    #: Combined models: members whose coarse alphas overlap less than this (IoU) disagree.
    min_members_agreement: float = 0.80

    @classmethod
    def from_dict(cls, d: dict) -> "QualityThresholds":
        unknown = set(d) - set(asdict(cls()))
        if unknown:
            raise ValueError(f"unknown quality thresholds: {sorted(unknown)}; known: {sorted(asdict(cls()))}")
        return cls(**d)


#: The see-through measure works on the alpha shrunk to this long side (about 2 ms at 2 MP, of
#: measure()'s 17-19 ms on the 2-core development machine).
_SEE_THROUGH_SIDE = 256
#: Alpha strictly between these is semi-transparent for the see-through measure; at or under LOW is
#: clear (the backdrop, or a real hole).
_SEMI_LOW, _SEMI_HIGH = 0.1, 0.9
#: A patch must lie deeper than max(this many pixels of the shrunk alpha, the outline's mean soft
#: width) from clear alpha to count as inside the object...
_MIN_DEPTH = 2.0
#: ... and stay below a ramp from the backdrop this many mean soft widths wide. 3 keeps fur up to
#: 160 px long on an 800-px image (tests/test_quality.py) out; 2 let it in.
_RAMP_WIDTHS = 3.0


def see_through(alpha: np.ndarray) -> float:
    """The largest semi-transparent patch lying inside the object, as a share of the object (alpha >
    0.1); 0 when there is none.

    On the alpha shrunk to a 256-pixel long side. A soft outline, hair and fur are transitions:
    their alpha climbs from the backdrop inwards, over about the outline's mean soft width w
    (semi-transparent pixels per pixel of the alpha > 0.5 outline; the same at any image size).
    A semi-transparent pixel (0.1 < alpha < 0.9) counts as see-through when it lies deeper than w
    (or 2 px) from clear alpha (<= 0.1: the backdrop, a clear hole, or the frame) and its alpha is
    still below a ramp three times as wide: 0.1 + 0.8 * depth / 3w. So a soft edge, however wide,
    and long fur (wider than average here and there, but climbing) do not count, while a see-through
    cap, a glass window or a whole see-through bottle (low alpha far from the backdrop) does. The
    largest 8-connected patch is reported, so that scattered tufts do not add up."""
    H, W = alpha.shape
    scale = _SEE_THROUGH_SIDE / max(H, W)
    a = alpha if scale >= 1 else cv2.resize(alpha, (max(1, round(W * scale)), max(1, round(H * scale))),
                                            interpolation=cv2.INTER_AREA)
    visible = a > _SEMI_LOW
    obj = int(visible.sum())
    if obj == 0:
        return 0.0
    semi = visible & (a < _SEMI_HIGH)
    contours, _ = cv2.findContours((a > 0.5).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    outline = sum(len(c) for c in contours)
    width = max(_MIN_DEPTH, float(semi.sum()) / outline if outline else 0.0)
    # Distance to the nearest clear pixel, the frame counting as clear.
    dist = cv2.distanceTransform(np.pad(visible.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    ramp = _SEMI_LOW + (_SEMI_HIGH - _SEMI_LOW) * np.minimum(1.0, dist / (_RAMP_WIDTHS * width))
    deep = (semi & (dist > width) & (a < ramp)).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(deep, connectivity=8)
    return float(stats[1:, cv2.CC_STAT_AREA].max()) / obj if n > 1 else 0.0


def members_agreement(members: np.ndarray) -> float:
    """members: float32 [M, h, w] alphas of a combined model's members -> the lowest IoU of two
    of them at 0.5 (1.0 where both are empty)."""
    return min(metrics.iou(a, b) for a, b in itertools.combinations(members, 2))


def measure(alpha: np.ndarray, coarse: np.ndarray | None = None, members_agreement: float | None = None) -> dict:
    """alpha, coarse: float32 [H, W] in [0, 1]; members_agreement: a combined model's
    (MatteResult.members_agreement) -> the measures (plain floats and ints)."""
    H, W = alpha.shape
    fg = alpha > 0.5
    fg_u8 = fg.astype(np.uint8)
    area = int(fg.sum())
    sides = {"top": fg[0].mean(), "bottom": fg[-1].mean(), "left": fg[:, 0].mean(), "right": fg[:, -1].mean()}
    n, _, stats, _ = cv2.connectedComponentsWithStats(fg_u8, connectivity=8)
    comp_areas = sorted((int(a) for a in stats[1:, cv2.CC_STAT_AREA]), reverse=True) if n > 1 else []
    soft = (alpha > 0.05) & (alpha < 0.95)
    contours, _ = cv2.findContours(fg_u8, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(len(c) for c in contours)
    edge_width = float(soft.sum()) / perimeter if perimeter else 0.0
    out = {
        "object_px": area,
        "foreground": area / (H * W),
        "border": {k: round(float(v), 4) for k, v in sides.items()},
        "component_areas": [a / max(1, area) for a in comp_areas[:5]],
        "uncertain": float(soft.sum()) / max(1, int((alpha > 0.05).sum())),
        "see_through": see_through(alpha),
        "edge_width": edge_width * 1000.0 / max(H, W),
        "agreement": None,
        "members_agreement": members_agreement,
    }
    if coarse is not None:
        c = coarse > 0.5
        union = int((c | fg).sum())
        out["agreement"] = float((c & fg).sum()) / union if union else 1.0
    return out


def flags(m: dict, t: QualityThresholds) -> list[str]:
    """Reasons to review, in words; empty when the cut-out looks fine. Measures from an older
    version (a cached record without a newer key) skip that check."""
    out = []
    px = m.get("object_px")
    if m["foreground"] == 0 or px == 0:
        out.append("empty cut-out: no foreground (no pixel is more than half opaque)")
    elif m["foreground"] < t.min_foreground or (px is not None and px < t.min_object_px):
        count = f"{px} px, " if px is not None else ""
        out.append(f"almost no foreground ({count}{m['foreground']:.1%} of the image)")
    if m["foreground"] > t.max_foreground:
        out.append(f"foreground covers {m['foreground']:.0%} of the image (background taken?)")
    touched = [side for side, share in m["border"].items() if share > t.border_touch]
    if touched:
        out.append(f"object touches the {'/'.join(touched)} border")
    pieces = sum(1 for a in m["component_areas"] if a >= t.min_component)
    if pieces > t.max_components:
        out.append(f"{pieces} separate pieces of foreground")
    if m["uncertain"] > t.max_uncertain:
        out.append(f"{m['uncertain']:.0%} of the object is semi-transparent")
    if m.get("see_through", 0.0) > t.max_see_through:
        out.append(f"see-through part inside the object ({m['see_through']:.0%} of it)")
    if m["edge_width"] > t.max_edge_width:
        out.append(f"soft edge ({m['edge_width']:.1f} px per 1000 px)")
    if m["agreement"] is not None and m["agreement"] < t.min_agreement:
        out.append(f"refinement changed the object (coarse/refined IoU {m['agreement']:.2f})")
    if m.get("members_agreement") is not None and m["members_agreement"] < t.min_members_agreement:
        out.append(f"models disagree (IoU {m['members_agreement']:.2f} between the combined model's members)")
    return out
