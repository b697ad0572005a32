"""Several models as one: each member sees the image at its own size and normalisation through its
own backend, and their alphas are combined per pixel at the combined model's size.

A combined model is data (engine/models/combined/*.json: a ModelSpec whose `extra` names the
members and the rule); the engine and every front door treat it as one model whose input is the
image at `input_size` as x/255 (mean 0, std 1) and whose output is the combined alpha.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..spec import ModelSpec
from .base import HostSlots


def _primary(alphas: list[np.ndarray]) -> np.ndarray:
    """The first member where it is sure (alpha below 0.2 or above 0.8); where it hesitates, the
    members' mean."""
    first = alphas[0]
    mean = sum(alphas) / len(alphas)
    return np.where(np.abs(first - 0.5) > 0.3, first, mean)


#: rule name -> f(list of member alphas [H, W] at the combined size) -> alpha [H, W]
RULES = {
    "primary": _primary,
    "mean": lambda alphas: sum(alphas) / len(alphas),
    "max": lambda alphas: np.maximum.reduce(alphas),
    "min": lambda alphas: np.minimum.reduce(alphas),
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

    def member_input(self, batch: np.ndarray, spec: ModelSpec) -> np.ndarray:
        """batch: float32 [N, 3, H, W] as x/255 -> the member's own size and normalisation."""
        h, w = spec.input_size
        mean = np.asarray(spec.mean, np.float32)
        std = np.asarray(spec.std, np.float32)
        out = np.empty((len(batch), 3, h, w), np.float32)
        for k, x in enumerate(batch):
            img = np.ascontiguousarray(x.transpose(1, 2, 0))
            if img.shape[:2] != (h, w):
                shrink = h * w < img.shape[0] * img.shape[1]
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            if spec.channel_order == "BGR":
                img = img[..., ::-1]
            out[k] = ((img - mean) / std).transpose(2, 0, 1)
        return out

    def run(self, batch: np.ndarray) -> np.ndarray:
        n, _, H, W = batch.shape
        per_member = []
        for backend, spec in self.members:
            alpha = backend.run(self.member_input(batch, spec))[:, 0]
            per_member.append([a if a.shape == (H, W) else
                               np.clip(cv2.resize(a, (W, H), interpolation=cv2.INTER_LINEAR), 0, 1) for a in alpha])
        out = np.empty((n, 1, H, W), np.float32)
        for k in range(n):
            out[k, 0] = np.clip(self.rule([m[k] for m in per_member]), 0.0, 1.0)
        return out
