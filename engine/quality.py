"""Quality flags from one alpha: which cut-outs a person should look at.

Every measure is read off the alpha (and the coarse pass it was refined from), so it costs a few
milliseconds and needs no ground truth:

- foreground fraction: almost nothing (the model missed the product) or almost everything (it
  took the backdrop);
- border contact: the object runs off the frame (a cropped product, or background taken as
  foreground);
- components: the product split into several sizeable pieces, or stray blobs beside it;
- uncertain share: how much of the object is semi-transparent (a hesitant model, or real glass);
- edge width: the soft transition's mean width across the outline, in pixels per 1000 px of the
  image's long side (a blurred, upsampled edge);
- agreement: IoU of the coarse pass and the refined alpha (tiles that changed the object itself,
  not just its edge).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class QualityThresholds:
    min_foreground: float = 0.02
    max_foreground: float = 0.90
    #: A side counts as touched when foreground covers more than this share of it.
    border_touch: float = 0.10
    #: Pieces of the foreground above `min_component` of its area each count as one component.
    max_components: int = 2
    min_component: float = 0.01
    max_uncertain: float = 0.25
    #: u2netp's clean cut-outs of the demo photos measure 15-22; its doubtful ones 34-39.
    max_edge_width: float = 25.0
    min_agreement: float = 0.85

    @classmethod
    def from_dict(cls, d: dict) -> "QualityThresholds":
        unknown = set(d) - set(asdict(cls()))
        if unknown:
            raise ValueError(f"unknown quality thresholds: {sorted(unknown)}; known: {sorted(asdict(cls()))}")
        return cls(**d)


def measure(alpha: np.ndarray, coarse: np.ndarray | None = None) -> dict:
    """alpha, coarse: float32 [H, W] in [0, 1] -> the measures (plain floats and ints)."""
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
        "foreground": area / (H * W),
        "border": {k: round(float(v), 4) for k, v in sides.items()},
        "component_areas": [a / max(1, area) for a in comp_areas[:5]],
        "uncertain": float(soft.sum()) / max(1, int((alpha > 0.05).sum())),
        "edge_width": edge_width * 1000.0 / max(H, W),
        "agreement": None,
    }
    if coarse is not None:
        c = coarse > 0.5
        union = int((c | fg).sum())
        out["agreement"] = float((c & fg).sum()) / union if union else 1.0
    return out


def flags(m: dict, t: QualityThresholds) -> list[str]:
    """Reasons to review, in words; empty when the cut-out looks fine."""
    out = []
    if m["foreground"] < t.min_foreground:
        out.append(f"almost no foreground ({m['foreground']:.1%} of the image)")
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
    if m["edge_width"] > t.max_edge_width:
        out.append(f"soft edge ({m['edge_width']:.1f} px per 1000 px)")
    if m["agreement"] is not None and m["agreement"] < t.min_agreement:
        out.append(f"refinement changed the object (coarse/refined IoU {m['agreement']:.2f})")
    return out
