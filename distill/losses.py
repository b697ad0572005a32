"""Matting losses on alpha [N, 1, H, W] in [0, 1]: L1, gradient, Laplacian pyramid.

The teacher's soft alpha is the target; where exact ground truth exists (synthetic composites)
it replaces the teacher's. An optional weight map [N, 1, H, W] focuses any loss (for example on
the uncertain band).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _weighted_mean(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return x.mean()
    return (x * weight).sum() / weight.sum().clamp_min(1e-6)


def alpha_l1(pred, target, weight=None):
    return _weighted_mean((pred - target).abs(), weight)


def _sobel(x):
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype) / 8
    k = torch.stack([kx, kx.t()])[:, None]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)


def gradient_loss(pred, target, weight=None):
    """L1 between Sobel gradients: penalises blurred or misplaced edges that L1 barely sees."""
    return _weighted_mean((_sobel(pred) - _sobel(target)).abs().sum(1, keepdim=True), weight)


def _gauss(x):
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device, dtype=x.dtype) / 16
    k = (k1[:, None] * k1[None, :])[None, None]
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k)


def laplacian_loss(pred, target, levels: int = 5):
    """L1 over a Laplacian pyramid, finer levels weighted less (as in the matting literature)."""
    loss, p, t = 0.0, pred, target
    for level in range(levels):
        if min(p.shape[-2:]) < 4:
            break
        gp, gt = _gauss(p), _gauss(t)
        loss = loss + (2 ** level) * ((p - gp) - (t - gt)).abs().mean()
        p, t = F.avg_pool2d(gp, 2), F.avg_pool2d(gt, 2)
    return loss


def matting_loss(pred, target, weight=None, w_l1=1.0, w_grad=1.0, w_lap=1.0):
    """The sum the trainer minimises; returns (total, parts) for progress reporting."""
    parts = {"l1": alpha_l1(pred, target, weight), "grad": gradient_loss(pred, target, weight),
             "lap": laplacian_loss(pred, target)}
    total = w_l1 * parts["l1"] + w_grad * parts["grad"] + w_lap * parts["lap"]
    return total, {k: float(v.detach()) for k, v in parts.items()}


def deep_supervision_loss(fused_logit, side_logits, target):
    """U²-Net's own training loss (Qin et al. 2020): binary cross-entropy on the fused map and on
    every side output, taken on logits so that a saturated output still gets a gradient (an L1 on
    sigmoids of a freshly pruned network's very negative logits has none, and it stays at zero)."""
    bce = F.binary_cross_entropy_with_logits
    return bce(fused_logit, target) + sum(bce(s, target) for s in side_logits) / len(side_logits)
