"""engine/gpu/finish.py against the CPU finish (engine/matting.MattingEngine.finish).

The torch code is device-agnostic, so the comparison runs on CPU tensors here; the one test
marked gpu repeats it on CUDA.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cvmatte.engine.metrics import edge_band, sad  # noqa: E402
from cvmatte.engine.settings import MatteSettings  # noqa: E402
from cvmatte.samples import make_composite  # noqa: E402

gpu = pytest.importorskip("cvmatte.engine.gpu.finish")


@pytest.fixture(scope="module")
def case(matter):
    comp = make_composite(2.0, seed=1, fg_photo="coffee.png", bg_photo="rocket.jpg")
    coarse_small = matter.engine.coarse([comp.rgb])[0]
    return comp, coarse_small


def run_finish(matter, comp, coarse_small, device, settings=None):
    """The device finish, downloaded: (alpha uint8 [H, W], foreground uint8 [H, W, 3])."""
    s = settings or matter.engine.settings
    rgb = torch.from_numpy(comp.rgb).permute(2, 0, 1).contiguous().to(device)
    a, fg = gpu.finish(rgb, torch.from_numpy(coarse_small).to(device), matter.engine.spec.input_size, s)
    assert a.dtype == torch.uint8 and fg.dtype == torch.uint8 and a.device.type == torch.device(device).type
    return a.cpu().numpy(), fg.permute(1, 2, 0).cpu().numpy()


def compare(matter, comp, coarse_small, device):
    cpu = matter.engine.finish(comp.rgb, coarse_small)
    alpha_u8, fg = run_finish(matter, comp, coarse_small, device)
    assert alpha_u8.shape == cpu.alpha_u8.shape and fg.shape == cpu.foreground.shape
    diff = np.abs(alpha_u8.astype(np.int16) - cpu.alpha_u8).mean()
    assert diff < 1.5, diff
    # Against the exact alpha, on the edge band: within a few percent of the CPU path's error.
    band = edge_band(comp.alpha, 8)
    sad_gpu, sad_cpu = sad(alpha_u8 / 255.0, comp.alpha, band), sad(cpu.alpha, comp.alpha, band)
    assert sad_gpu < 1.03 * sad_cpu, (sad_gpu, sad_cpu)
    soft = (cpu.alpha_u8 > 0) & (cpu.alpha_u8 < 255)
    fg_diff = np.abs(fg.astype(np.int16) - cpu.foreground)[soft].mean()
    assert fg_diff < 3.0, fg_diff
    # Away from the soft pixels the foreground is the photo itself, on both paths.
    opaque = alpha_u8 == 255
    assert np.array_equal(fg[opaque], comp.rgb[opaque])


def test_box_filter_matches_opencv():
    rng = np.random.default_rng(0)
    x = rng.random((37, 53, 3)).astype(np.float32)
    xt = torch.from_numpy(x).permute(2, 0, 1)
    for r in (1, 5, 40):  # 40: the window is wider than the image, the border reflects again
        ref = cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)
        assert np.abs(gpu.box(xt, 2 * r + 1).permute(1, 2, 0).numpy() - ref).max() < 1e-4
    for k in (6, 30):  # cv2.blur: BORDER_REFLECT_101, even windows anchored at k // 2
        ref = cv2.blur(x, (k, k))
        assert np.abs(gpu.box(xt, k, gpu.REFLECT_101).permute(1, 2, 0).numpy() - ref).max() < 1e-4


def test_resizes_match_opencv():
    x = np.random.default_rng(1).random((37, 53, 3)).astype(np.float32)
    xt = torch.from_numpy(x).permute(2, 0, 1)
    for hw in ((12, 17), (9, 13)):  # non-integer ratios: partial pixels weighted by overlap
        ref = cv2.resize(x, hw[::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(gpu.resize_area(xt, hw).permute(1, 2, 0).numpy() - ref).max() < 1e-5
    ref = cv2.resize(x, (130, 100), interpolation=cv2.INTER_LINEAR)
    assert np.abs(gpu.resize_linear(xt, (100, 130)).permute(1, 2, 0).numpy() - ref).max() < 1e-5


def test_band_and_guided_filter_match_cpu():
    from cvmatte.engine import tiling
    from cvmatte.engine.refine import guided_filter

    rng = np.random.default_rng(2)
    c = rng.random((40, 40)).astype(np.float32) * 0.1
    c[10:20, 10:30] = 0.5
    for d in (1, 3):
        ours = gpu.uncertain_band(torch.from_numpy(c), 0.02, 0.98, d).bool().numpy()
        assert np.array_equal(ours, tiling.uncertain_band(c, 0.02, 0.98, d))
    I, p = rng.random((120, 170, 3)).astype(np.float32), rng.random((120, 170)).astype(np.float32)
    for r, s in ((4, 1), (12, 3)):
        ours = gpu.guided_filter(torch.from_numpy(I).permute(2, 0, 1), torch.from_numpy(p), r, 1e-3, s).numpy()
        assert np.abs(ours - guided_filter(I, p, r, 1e-3, s)).max() < 1e-4


def test_finish_matches_cpu_path(matter, case):
    compare(matter, *case, "cpu")


def test_untiled_alpha_is_the_upsampled_coarse(matter, case):
    comp, coarse_small = case
    s = MatteSettings(tile=False)
    cpu = matter.engine.finish(comp.rgb, coarse_small, settings=s)
    alpha_u8, fg = run_finish(matter, comp, coarse_small, "cpu", s)
    assert np.abs(alpha_u8.astype(np.int16) - cpu.alpha_u8).max() <= 1


def test_source_alpha_and_no_despill(matter, case):
    comp, coarse_small = case
    H, W = comp.alpha.shape
    src = np.ones((H, W), np.float32)
    src[:, : W // 4] = 0.0  # the file's own transparency stays transparent
    s = MatteSettings(despill=0.0)
    cpu = matter.engine.finish(comp.rgb, coarse_small, src, settings=s)
    rgb = torch.from_numpy(comp.rgb).permute(2, 0, 1).contiguous()
    a, fg = gpu.finish(rgb, torch.from_numpy(coarse_small), matter.engine.spec.input_size, s, torch.from_numpy(src))
    assert (a[:, : W // 4] == 0).all()
    assert np.abs(a.numpy().astype(np.int16) - cpu.alpha_u8).mean() < 1.5
    assert torch.equal(fg, rgb)  # despill 0: the photo's own colours


@pytest.mark.gpu
def test_finish_matches_cpu_path_on_cuda(matter, case):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    compare(matter, *case, "cuda")
