"""The CV-UNet family in torch, its checkpoints and losses, and export of a checkpoint."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (the export extra)")

from cvmatte import Matter  # noqa: E402
from cvmatte.samples import load_photo  # noqa: E402
from cvmatte.distill import losses  # noqa: E402
from cvmatte.engine.nets.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from cvmatte.engine.nets.cvunet import PRESETS, CVUNetConfig, build, count_flops, count_parameters  # noqa: E402
from cvmatte.engine.errors import ModelError  # noqa: E402
from cvmatte.engine.spec import ModelSpec  # noqa: E402


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("size", [(64, 96), (97, 131), (33, 200)])
def test_presets_run_at_any_size_and_return_alpha(preset, size):
    model = build(preset).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, *size))
    assert y.shape == (2, 1, *size)
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0


def test_large_input_and_refiner_variant():
    model = build("cvunet-xs", in_channels=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 4, 1024, 768)).shape == (1, 1, 1024, 768)


def test_sizes_order_and_the_student_is_far_smaller_than_the_teacher():
    params = {p: count_parameters(build(p)) for p in PRESETS}
    flops = {p: count_flops(build(p), (320, 320)) for p in PRESETS}
    assert params["cvunet-l"] > params["cvunet-s"] > params["cvunet-xs"]
    assert flops["cvunet-l"] > flops["cvunet-s"] > flops["cvunet-xs"]
    # u2netp is 39.5 GFLOP at 320x320: the edge student must be at least 5x cheaper.
    assert flops["cvunet-s"] * 5 < 39.5e9


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="encoder"):
        CVUNetConfig(encoder="vit")
    with pytest.raises(ValueError, match="width"):
        CVUNetConfig(width=0)
    with pytest.raises(ValueError, match="cvunet-s"):
        build("cvunet-xxl")


def test_losses_are_zero_at_the_target_and_see_a_blurred_edge():
    target = torch.zeros(1, 1, 64, 64)
    target[..., 32:] = 1.0
    blurred = torch.nn.functional.avg_pool2d(target, 9, 1, 4)
    for loss in (losses.alpha_l1, losses.gradient_loss, losses.laplacian_loss):
        assert float(loss(target, target)) == pytest.approx(0.0, abs=1e-7)
        assert float(loss(blurred, target)) > 0.0
    total, parts = losses.matting_loss(blurred, target)
    assert float(total) == pytest.approx(sum(parts.values()), rel=1e-5)
    # The gradient loss cares about the edge alone: a weight off the edge makes it vanish.
    weight = torch.zeros_like(target)
    weight[..., :, :8] = 1
    assert float(losses.gradient_loss(blurred, target, weight)) == pytest.approx(0.0, abs=1e-6)


def test_checkpoint_round_trip_and_export_through_the_cli(tmp_path):
    import subprocess
    import sys

    torch.manual_seed(0)
    model = build("cvunet-xs").eval()
    spec = ModelSpec(name="cvunet-xs-test", input_size=(320, 320), input_name="image", output_name="alpha")
    save_checkpoint(tmp_path / "student.pt", model, spec, {"step": 7})
    loaded, loaded_spec, extra = load_checkpoint(tmp_path / "student.pt")
    assert loaded_spec == spec and extra == {"step": 7}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x))

    proc = subprocess.run([sys.executable, "-m", "cvmatte", "export", str(tmp_path / "student.pt"), "-o",
                           str(tmp_path / "out"), "--precision", "fp32,fp16"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    m = Matter(tmp_path / "out" / "cvunet-xs-test.fp32.onnx", device="cpu")
    assert m.spec.dynamic_hw and m.matte(load_photo("coffee.png")).alpha.shape == (400, 600)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not a cvmatte checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt")
