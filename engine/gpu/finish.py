"""The per-image finish (engine/matting.MattingEngine.finish with the guided-filter refiner) as
torch ops on the device: coarse-alpha upsampling, the uncertain band, the guided filter and
blur-fusion foreground estimation. Only the uint8 results need to leave the device.

Each step mirrors its OpenCV counterpart on the CPU path: bilinear resizes as cv2.INTER_LINEAR
(align_corners=False, no antialias), INTER_AREA as exact area weights, box filters as running
sums (cost independent of the radius) with OpenCV's border rules spelt out by index arithmetic
(torch's "reflect" padding is BORDER_REFLECT_101, not the BORDER_REFLECT the guided filter uses).

One deliberate difference: the CPU path filters 512-px tiles over the band and feather-blends
them; here the guided filter runs once over the whole image (its coefficients at about the
model's resolution, so this is cheap) and is blended in with the same band weight.
"""

from __future__ import annotations

import math

import cv2
import torch
import torch.nn.functional as F

from ..refine import FAINT, solve_sym3, trust_where_hesitant
from ..settings import MatteSettings

REFLECT = "reflect"        # cv2.BORDER_REFLECT: fedcba|abcdef (the edge pixel repeated)
REFLECT_101 = "reflect101"  # cv2.BORDER_REFLECT_101 (cv2.blur's default): fedcb|abcdef


def _border_index(n: int, before: int, after: int, mode: str, device) -> torch.Tensor:
    """Source indices of positions -before .. n+after-1 under an OpenCV border rule; periodic
    folding, so a window wider than the image reflects again as OpenCV's borderInterpolate does."""
    p = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(p)
    if mode == REFLECT:
        q = p.remainder(2 * n)
        return torch.where(q >= n, 2 * n - 1 - q, q)
    q = p.remainder(2 * n - 2)
    return torch.where(q >= n, 2 * n - 2 - q, q)


def _box_1d(x: torch.Tensor, k: int, dim: int, mode: str) -> torch.Tensor:
    # OpenCV's default anchor is k // 2: an even window reaches one pixel further back.
    before, after = k // 2, k - 1 - k // 2
    xp = x.index_select(dim, _border_index(x.shape[dim], before, after, mode, x.device))
    n = x.shape[dim]
    if k <= 8:  # blur-fusion's fixed 6x6 and small radii: k shifted adds beat a float64 scan
        return sum(xp.narrow(dim, i, n) for i in range(k)) / k
    # The running sum in float64: in float32 a sum over thousands of pixels loses ~1e-4, and the
    # 1e-5-guarded divisions of blur-fusion magnify that near alpha 0 and 1.
    c = F.pad(xp.double().cumsum(dim).movedim(dim, -1), (1, 0)).movedim(-1, dim)
    return ((c.narrow(dim, k, n) - c.narrow(dim, 0, n)) / k).to(x.dtype)


def box(x: torch.Tensor, ksize: int | tuple[int, int], mode: str = REFLECT) -> torch.Tensor:
    """Normalised box filter over the last two dims, as cv2.boxFilter / cv2.blur with the given
    border; ksize: one side or (height, width)."""
    ky, kx = (ksize, ksize) if isinstance(ksize, int) else ksize
    return _box_1d(_box_1d(x, kx, x.dim() - 1, mode), ky, x.dim() - 2, mode)


def _area_weights(n_in: int, n_out: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output pixel, the source indices and overlap weights of cv2.INTER_AREA (shrinking):
    output i averages the source interval [i*s, (i+1)*s), s = n_in / n_out, partial pixels by
    their overlap. torch's "area" mode (adaptive pooling) counts partial pixels whole."""
    s = n_in / n_out
    K = math.ceil(s) + 1
    i = torch.arange(n_out, device=device, dtype=torch.float64)[:, None]
    j = torch.floor(i * s) + torch.arange(K, device=device, dtype=torch.float64)[None]
    w = (torch.minimum(j + 1, (i + 1) * s) - torch.maximum(j, i * s)).clamp(min=0) / s
    w = torch.where(j < n_in, w, torch.zeros_like(w))
    return j.clamp(max=n_in - 1).long(), w.float()


def resize_area(x: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """x [..., H, W] -> [..., h, w] as cv2.resize INTER_AREA when shrinking (separable)."""
    for dim, n_out in ((x.dim() - 1, size_hw[1]), (x.dim() - 2, size_hw[0])):
        idx, w = _area_weights(x.shape[dim], n_out, x.device)
        xt = x.movedim(dim, -1)
        x = (xt[..., idx] * w).sum(-1).movedim(-1, dim)
    return x


def resize_linear(x: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """x [..., h, w] -> [..., H, W] as cv2.resize INTER_LINEAR (half-pixel centres, no antialias)."""
    lead = x.shape[:-2]
    y = F.interpolate(x.reshape(1, -1, *x.shape[-2:]), size=tuple(size_hw), mode="bilinear",
                      align_corners=False, antialias=False)
    return y.reshape(*lead, *size_hw)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float, subsample: int = 1) -> torch.Tensor:
    """engine/refine.guided_filter on the device: guide float [3, H, W] in [0, 1], src float [H, W]."""
    H, W = src.shape
    I, p, r = guide, src, int(radius)
    if subsample > 1:
        size = (max(1, H // subsample), max(1, W // subsample))
        I, p = resize_area(guide, size), resize_area(src, size)
        r = max(1, round(radius / subsample))
    k = 2 * r + 1
    ii = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    # All first-pass means in one filter call: I (3), p (1), I*p (3), the 6 products I_a*I_b.
    means = box(torch.cat([I, p[None], I * p, torch.stack([I[a] * I[b] for a, b in ii])]), k)
    mean_I, mean_p = means[0:3], means[3]
    cov_Ip = means[4:7] - mean_I * mean_p
    var = {ab: means[7 + n] - mean_I[ab[0]] * mean_I[ab[1]] + (eps if ab[0] == ab[1] else 0.0)
           for n, ab in enumerate(ii)}
    # Inverse of the per-pixel 3x3 colour covariance by cofactors: the CPU's own function.
    a = torch.stack(solve_sym3(var, *cov_Ip))
    b = mean_p - (a * mean_I).sum(0)
    Ab = box(torch.cat([a, b[None]]), k)
    if subsample > 1:
        Ab = resize_linear(Ab, (H, W))
    return (Ab[:3] * guide).sum(0) + Ab[3]


def uncertain_band(coarse_small: torch.Tensor, low: float, high: float, dilate_px: int) -> torch.Tensor:
    """tiling.uncertain_band on the device (float 0/1): OpenCV's own elliptic structuring element,
    the dilation as a convolution (model resolution: tiny), zeros beyond the border like cv2.dilate."""
    band = ((coarse_small > low) & (coarse_small < high)).float()
    if dilate_px <= 0:
        return band
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
    kernel = torch.as_tensor(k, dtype=torch.float32, device=band.device)[None, None]
    return (F.conv2d(band[None, None], kernel, padding=dilate_px)[0, 0] > 0.5).float()


def quantize(alpha: torch.Tensor) -> torch.Tensor:
    """engine/matting.quantize: float [0, 1] -> uint8, rounded half up."""
    return (alpha * 255.0 + 0.5).clamp(0, 255).floor().to(torch.uint8)


def estimate_foreground(rgb: torch.Tensor, alpha: torch.Tensor, strength: float = 1.0,
                        radius: int = 90) -> torch.Tensor:
    """engine/refine.estimate_foreground on the device: rgb uint8 [3, H, W], alpha float [H, W]
    in [0, 1] -> uint8 [3, H, W], the photo itself outside the soft pixels."""
    soft = (alpha > FAINT) & (alpha < 1.0 - 1.0 / 512)
    rows, cols = soft.any(1).nonzero()[:, 0], soft.any(0).nonzero()[:, 0]
    if strength <= 0 or len(rows) == 0:
        return rgb
    # The same crop as the CPU (the soft pixels' box plus the radius): the wide pass's grid and
    # borders depend on it. Four numbers come back to the host.
    H, W = alpha.shape
    y0, y1, x0, x1 = torch.stack([rows[0], rows[-1], cols[0], cols[-1]]).tolist()
    y0, y1, x0, x1 = max(0, y0 - radius), min(H, y1 + 1 + radius), max(0, x0 - radius), min(W, x1 + 1 + radius)
    crop = rgb[:, y0:y1, x0:x1]
    I, a, s = crop.float() * (1.0 / 255.0), alpha[y0:y1, x0:x1], soft[y0:y1, x0:x1]
    h, w = a.shape
    # Wide pass on a k-times smaller grid; cv2.blur's border is BORDER_REFLECT_101.
    k = max(1, radius // 30)
    small = (max(1, h // k), max(1, w // k))
    si, sa = resize_area(I, small), resize_area(a, small)
    r = max(1, round(radius / k))
    blurred = box(torch.cat([si * sa, si * (1 - sa), sa[None]]), r, REFLECT_101)
    blur_a = blurred[6]
    wide = resize_linear(torch.cat([blurred[:3] / (blur_a + 1e-5), blurred[3:6] / (1 - blur_a + 1e-5)]), (h, w))
    wide_F, wide_B = wide[:3], wide[3:]
    F1 = (wide_F + a * (I - a * wide_F - (1 - a) * wide_B)).clamp(0, 1)
    # Narrow pass, 6x6: F1 replaces the photo at the soft pixels only.
    Fa = torch.where(s, F1 * a, I * a)
    narrow = box(torch.cat([Fa, wide_B * (1 - a), a[None]]), 6, REFLECT_101)
    blur_a6 = narrow[6]
    nF, nB = narrow[:3] / (blur_a6 + 1e-5), narrow[3:6] / (1 - blur_a6 + 1e-5)
    Fs = (nF + a * (I - a * nF - (1 - a) * nB)).clamp(0, 1)
    if strength < 1.0:
        Fs = I + strength * (Fs - I)
    out = rgb.clone()
    out[:, y0:y1, x0:x1] = torch.where(s, quantize(Fs), crop)
    return out


def finish(rgb: torch.Tensor, coarse_small: torch.Tensor, spec_input_size: tuple[int, int],
           settings: MatteSettings, source_alpha: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MattingEngine.finish (guided-filter refiner) on rgb's device, in float32.

    rgb: uint8 [3, H, W]; coarse_small: float [h, w], the model's alpha at its resolution;
    spec_input_size: the model's (h, w); source_alpha: float [H, W] in [0, 1], the file's own
    transparency, or None. Returns (alpha uint8 [H, W], foreground uint8 [3, H, W]) on the device.
    """
    s = settings
    _, H, W = rgb.shape
    h, w = spec_input_size
    scale = max(H / h, W / w)
    img = rgb.float() * (1.0 / 255.0)
    coarse_small = coarse_small.float()
    # preprocess.upsample_alpha: clipped only when it was resized.
    coarse = coarse_small if coarse_small.shape == (H, W) else resize_linear(coarse_small, (H, W)).clamp(0, 1)
    alpha = coarse
    if s.tile and (H > h or W > w):
        band = uncertain_band(coarse_small, s.band_low, s.band_high, int(math.ceil(s.band_dilate_model_px)))
        weight = resize_linear(band, (H, W)).clamp(0, 1)
        # GuidedFilterRefiner's radius and subsample for this scale.
        radius = max(2, int(round(s.guided_radius_per_scale * scale)))
        sub = max(1, int(round(scale)))
        refined = guided_filter(img, coarse, radius, s.guided_eps, sub).clamp(0, 1)
        if s.guided_confidence_weighted:
            refined = trust_where_hesitant(coarse, refined)
        alpha = (coarse + weight * (refined - coarse)).clamp(0, 1)
    if source_alpha is not None:
        alpha = alpha * source_alpha.float()
    alpha_u8 = quantize(alpha)
    # The foreground from the alpha as saved (k / 255), as the CPU path and the cache see it.
    radius = max(90, int(10 * scale))
    fg = estimate_foreground(rgb, alpha_u8.float() / 255.0, s.despill, radius)
    return alpha_u8, fg
