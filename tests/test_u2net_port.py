"""U²-Net-p in torch, its weights read from the packaged ONNX file: the same alpha as ONNX Runtime
on real photos, runnable by the torch backend, exportable back to ONNX with a passing parity
report, and clear refusals for ONNX files that are not a U²-Net-p."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cvmatte import Matter  # noqa: E402
from cvmatte.samples import PHOTOS, load_photo, write_demo_photos  # noqa: E402
from cvmatte.engine import zoo  # noqa: E402
from cvmatte.engine.backends.onnxruntime import OrtBackend  # noqa: E402
from cvmatte.engine.errors import ModelError  # noqa: E402
from cvmatte.engine.nets.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from cvmatte.engine.nets.u2net import from_onnx, layout, load_layout  # noqa: E402
from cvmatte.engine.preprocess import normalize, resize  # noqa: E402


@pytest.fixture(scope="module")
def port(matter):
    return from_onnx(matter.model.path)


@pytest.mark.parametrize("size", [(320, 320), (256, 416)])
def test_port_matches_onnx_runtime_on_real_photos(port, matter, size):
    ort = OrtBackend(matter.model, device="cpu")
    x = np.stack([normalize(resize(load_photo(name), size), matter.spec) for name in PHOTOS])
    with torch.no_grad():
        got = port(torch.from_numpy(x)).numpy()
    expected = ort.run(x)
    assert got.shape == expected.shape == (len(PHOTOS), 1, *size)
    assert np.abs(got - expected).max() <= 1e-4
    assert expected.std() > 0.2  # real mattes, not a flat map that would match anything


def test_side_outputs_are_the_seven_maps_of_the_onnx_file(port, matter):
    import onnxruntime as ort

    x = normalize(resize(load_photo("coffee.png"), (320, 320)), matter.spec)[None]
    session = ort.InferenceSession(str(matter.model.path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {matter.spec.input_name: x})
    port.side_outputs = True
    try:
        with torch.no_grad():
            got = [t.numpy() for t in port(torch.from_numpy(x))]
    finally:
        port.side_outputs = False
    assert len(got) == len(expected) == 7
    assert max(np.abs(g - e).max() for g, e in zip(got, expected)) <= 1e-4


def test_torch_backend_runs_the_default_model_like_onnx_runtime(matter):
    ours = Matter("u2netp", backend="torch", device="cpu", despill=0.0)
    ref = Matter("u2netp", "onnxruntime", device="cpu", precision="fp32", despill=0.0)
    photo = load_photo("chelsea.png")
    assert "torch eager fp32" in ours.backend.describe()
    # Both on the 8-bit grid: at most one level apart where a value sits at a rounding boundary.
    assert np.abs(ours.matte(photo).alpha - ref.matte(photo).alpha).max() <= 1 / 255 + 1e-6


def test_checkpoint_round_trip_keeps_a_pruned_layout(tmp_path, port, matter):
    shapes = layout(port)
    shapes["encoder.0.enc.0.0"] = [8, 64, 3, 3]   # a narrower first level of stage 1 ...
    shapes["encoder.0.enc.1.0"] = [16, 8, 3, 3]   # ... and the layers that read it:
    shapes["encoder.0.dec.0.0"] = [64, 24, 3, 3]  # the skip concatenated with 16 channels
    narrow = load_layout(shapes)
    save_checkpoint(tmp_path / "n.pt", narrow, matter.spec)
    loaded, spec, _ = load_checkpoint(tmp_path / "n.pt")
    assert layout(loaded) == shapes and spec == matter.spec
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x), narrow.eval()(x))


def test_port_exports_back_to_onnx_with_a_passing_parity_report(tmp_path, port, matter):
    from cvmatte.export import parity
    from cvmatte.export.convert import export

    save_checkpoint(tmp_path / "u2netp.pt", port, matter.spec)
    photos = write_demo_photos(tmp_path / "photos")
    report = export(tmp_path / "u2netp.pt", tmp_path / "out", precisions=("fp32",), parity_images=photos, log=lambda *a: None)
    assert report.passed, report.parity
    # ... and the round trip torch -> ONNX agrees with the original ONNX file.
    images = parity.load_images(photos)
    row = parity.judge("torch port, exported", "u2netp.onnx", parity.compare(
        parity.onnx_alphas(matter.model, images),
        parity.onnx_alphas(zoo.resolve(report.files["fp32"]), images)), parity.TOLERANCES["fp32"])
    assert row["passed"], row


def test_an_onnx_file_that_is_not_a_u2netp_is_refused_by_name():
    refiner = zoo.resolve("cvunet-refiner")
    with pytest.raises(ValueError, match="cvunet-refiner.onnx.*not a U²-Net-p"):
        from_onnx(refiner.path)


def test_teacher_of_another_onnx_network_says_what_it_needs():
    from cvmatte.distill.teacher import torch_teacher

    module, spec = torch_teacher("u2netp")
    assert spec.name == "u2netp" and sum(p.numel() for p in module.parameters()) == 1_125_485  # 1.13 M, as the ONNX file
    try:
        import onnx2torch  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="not a U²-Net-p.*onnx2torch"):
            torch_teacher("cvunet-refiner")
    else:  # with onnx2torch installed the CV-UNet graph converts and matches ONNX Runtime
        module, spec = torch_teacher("cvunet-refiner")
        x = np.random.default_rng(0).random((1, 4, 64, 64), dtype=np.float32)
        ort = OrtBackend(zoo.resolve("cvunet-refiner"), device="cpu")
        with torch.no_grad():
            assert np.abs(module(torch.from_numpy(x)).numpy() - ort.run(x)).max() < 1e-4
