"""Several models as one: each member sees the image at its own size and normalisation through its
own backend, and their alphas are combined per pixel at the combined model's size.

A combined model is data (engine/models/combined/*.json: a ModelSpec whose `extra` names the
members and the rule); the engine and every front door treat it as one model whose input is the
image at `input_size` as x/255 (mean 0, std 1) and whose output is the combined alpha, followed by
each member's alpha as further channels (the engine's "models disagree" quality flag reads them).
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import preprocess
from ..spec import ModelSpec
from .base import HostSlots, Slot


def _primary(alphas: list[np.ndarray]) -> np.ndarray:
    """The first member where it is sure (alpha below 0.2 or above 0.8); where it hesitates, the
    members' mean."""
    first = alphas[0]
    mean = sum(alphas) / len(alphas)
    return np.where(np.abs(first - 0.5) > 0.3, first, mean)


def _confident(alphas: list[np.ndarray]) -> np.ndarray:
    """Per pixel, the member farthest from 0.5 (the surest)."""
    stack = np.stack(alphas)
    pick = np.argmax(np.abs(stack - 0.5), axis=0)
    return np.take_along_axis(stack, pick[None], axis=0)[0]


def _sure_union(alphas: list[np.ndarray]) -> np.ndarray:
    """Every member's sure foreground (above 0.8) kept, elsewhere `primary`: a part the first
    member dropped and another is sure of comes back, while another's hesitant ghosts (a shelf,
    a flag behind the subject) do not."""
    base = _primary(alphas)
    others = np.maximum.reduce(alphas[1:])
    return np.where(others > 0.8, np.maximum(base, others), base)


def _parts(alphas: list[np.ndarray]) -> np.ndarray:
    """`primary`, and the other members' foreground parts that do not touch the first member's
    foreground at all (a second object it dropped), whole."""
    base = _primary(alphas)
    first = (alphas[0] > 0.5).astype(np.uint8)
    near = cv2.dilate(first, np.ones((9, 9), np.uint8))
    others = np.maximum.reduce(alphas[1:])
    n, labels = cv2.connectedComponents((others > 0.5).astype(np.uint8))
    if n <= 1:
        return base
    touching = np.zeros(n, bool)
    touching[np.unique(labels[near > 0])] = True
    apart = ~touching[labels] & (labels > 0)
    apart = cv2.dilate(apart.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # their soft rims too
    return np.where(apart, np.maximum(base, others), base)


#: rule name -> f(list of member alphas [H, W] at the combined size) -> alpha [H, W]
RULES = {
    "primary": _primary,
    "mean": lambda alphas: sum(alphas) / len(alphas),
    "max": lambda alphas: np.maximum.reduce(alphas),
    "min": lambda alphas: np.minimum.reduce(alphas),
    "confident": _confident,
    "sure-union": _sure_union,
    "parts": _parts,
}


def members_of(spec: ModelSpec) -> list[str]:
    """The member model names of a combined spec; [] for an ordinary model."""
    return list(spec.extra.get("members", []))


def check_combined_spec(spec: ModelSpec) -> None:
    members, rule = members_of(spec), spec.extra.get("rule")
    if len(members) < 2:
        raise ValueError(f"{spec.name}: a combined model names at least two members, got {members}")
    if rule not in RULES:
        raise ValueError(f"{spec.name}: rule {rule!r} is none of {', '.join(RULES)}")
    if tuple(spec.mean) != (0.0, 0.0, 0.0) or tuple(spec.std) != (1.0, 1.0, 1.0) or spec.channel_order != "RGB":
        raise ValueError(f"{spec.name}: a combined model's input is RGB x/255 (mean 0, std 1)")


class CombinedBackend(HostSlots):
    name = "combined"
    max_batch = None
    fell_back = False

    def __init__(self, spec: ModelSpec, members: list[tuple[object, ModelSpec]]):
        check_combined_spec(spec)
        self.spec = spec
        self.members = members
        self.rule = RULES[spec.extra["rule"]]
        self.providers = [p for backend, _ in members for p in getattr(backend, "providers", [])]
        self.on_gpu = any(getattr(backend, "on_gpu", False) for backend, _ in members)
        self.fell_back = any(getattr(backend, "fell_back", False) for backend, _ in members)
        self.precision = "+".join(getattr(backend, "precision", "fp32") for backend, _ in members)

    def describe(self) -> str:
        parts = "; ".join(f"{s.name} on {b.describe()}" for b, s in self.members)
        return f"combined ({self.spec.extra['rule']}): {parts}"

    def make_slot(self, index: int, batch: int, chw: tuple[int, int, int]) -> Slot:
        c, h, w = chw
        return Slot(index, self.host_buffer((batch, c, h, w)), self.host_buffer((batch, 1 + len(self.members), h, w)))

    def member_input(self, batch: np.ndarray, spec: ModelSpec) -> np.ndarray:
        """batch: float32 [N, 3, H, W] as x/255 -> the member's own size and normalisation."""
        h, w = spec.input_size
        mean = np.asarray(spec.mean, np.float32)
        std = np.asarray(spec.std, np.float32)
        out = np.empty((len(batch), 3, h, w), np.float32)
        for k, x in enumerate(batch):
            img = preprocess.resize(np.ascontiguousarray(x.transpose(1, 2, 0)), (h, w))
            if spec.channel_order == "BGR":
                img = img[..., ::-1]
            out[k] = ((img - mean) / std).transpose(2, 0, 1)
        return out

    def run(self, batch: np.ndarray) -> np.ndarray:
        n, _, H, W = batch.shape
        per_member = []
        for backend, spec in self.members:
            alpha = backend.run(self.member_input(batch, spec))[:, 0]
            per_member.append([preprocess.upsample_alpha(a, (H, W)) for a in alpha])
        # Channel 0 the combined alpha, then each member's: the engine measures their agreement.
        out = np.empty((n, 1 + len(per_member), H, W), np.float32)
        for k in range(n):
            out[k, 0] = np.clip(self.rule([m[k] for m in per_member]), 0.0, 1.0)
            for j, m in enumerate(per_member):
                out[k, 1 + j] = m[k]
        return out
