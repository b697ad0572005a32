"""Export toolchain: TensorFlow graph and torch module to ONNX, FP16, INT8, parity, bundle.
Everything up to the TensorRT build runs on the CPU; TensorRT tests skip without it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cvmatte import Matter
from cvmatte.samples import PHOTOS, load_photo, write_demo_photos
from cvmatte.engine import zoo
from cvmatte.engine.errors import DeviceError
from cvmatte.engine.spec import ModelSpec

from .tf_graphs import MEAN, SIZE, STD, build_cv_unet_like_graph

tf = pytest.importorskip("tensorflow", reason="the export extra (tensorflow-cpu, tf2onnx) is not installed")


@pytest.fixture(scope="module")
def photos():
    return [load_photo(p) for p in PHOTOS]


@pytest.mark.parametrize("bgr", [False, True])
def test_tf_graph_converts_and_the_spec_is_read_from_the_graph(tmp_path, photos, bgr):
    from cvmatte.export.tf_graph import convert_tf_graph, load_graph_def, run_tf_graph

    graph = build_cv_unet_like_graph(tmp_path / "tf_graph.pb", bgr=bgr)
    converted = convert_tf_graph(graph, tmp_path / "out", name="cv-unet-test")
    spec = converted.spec
    assert spec.input_size == SIZE
    assert spec.channel_order == ("BGR" if bgr else "RGB")
    expected_mean, expected_std = (MEAN[::-1], STD[::-1]) if bgr else (MEAN, STD)
    np.testing.assert_allclose(spec.mean, expected_mean, atol=1e-5)
    np.testing.assert_allclose(spec.std, expected_std, atol=1e-5)
    assert spec.dynamic_batch

    # The whole graph in ONNX matches TensorFlow within a grey level.
    import onnxruntime as ort

    full = ort.InferenceSession(str(converted.full), providers=["CPUExecutionProvider"])
    graph_def = load_graph_def(graph)
    photo = photos[0]
    tf_out = run_tf_graph(graph_def, photo)
    (onnx_out,) = full.run(None, {"input_image:0": photo.astype(np.float32)})
    assert onnx_out.shape == tf_out.shape == (*photo.shape[:2], 4)
    assert np.abs(onnx_out.astype(int) - tf_out.astype(int)).max() <= 1

    # The core, run by the engine with the derived spec, gives the graph's own alpha. The photo is
    # smoothed first: the graph shrinks with plain bilinear sampling, the engine with area
    # averaging, and on fine texture the two sample different pixels.
    import cv2

    smooth = cv2.GaussianBlur(photo, (0, 0), 6)
    engine_alpha = Matter(converted.core, device="cpu", tile=False, despill=0).matte(smooth).alpha
    graph_alpha = run_tf_graph(graph_def, smooth)[..., 3].astype(np.float32) / 255
    assert np.abs(engine_alpha - graph_alpha).mean() < 0.02


def test_core_batches(tmp_path, photos):
    from cvmatte.export.tf_graph import convert_tf_graph

    converted = convert_tf_graph(build_cv_unet_like_graph(tmp_path / "g.pb"), tmp_path / "out")
    m = Matter(converted.core, device="cpu", tile=False, despill=0)
    together = m.engine.matte_many(photos[:3])
    for photo, r in zip(photos[:3], together):
        np.testing.assert_allclose(r.alpha, m.matte(photo).alpha, atol=1e-5)


def test_zoo_hook_converts_a_downloaded_graph(tmp_path):
    from cvmatte.export.tf_graph import convert_cv_unet_graph

    spec = convert_cv_unet_graph(build_cv_unet_like_graph(tmp_path / "tf_graph.pb"), tmp_path / "cache")
    resolved = zoo.resolve(tmp_path / "cache" / "cv-unet-universal.onnx")
    assert resolved.spec == spec


def test_torch_module_exports_with_dynamic_batch_and_size(tmp_path):
    torch = pytest.importorskip("torch")
    from cvmatte.export.torch_export import export_module

    class TinyUNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.down = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.dec = torch.nn.Conv2d(24, 1, 3, padding=1)

        def forward(self, x):
            skip = torch.relu(self.enc(x))
            deep = torch.relu(self.down(skip))
            up = torch.nn.functional.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            return torch.sigmoid(self.dec(torch.cat([up, skip], 1)))

    torch.manual_seed(0)
    spec = ModelSpec(name="tiny", input_size=(64, 64), input_name="image", output_name="alpha")
    out = export_module(TinyUNet(), spec, tmp_path / "tiny.onnx")
    assert out.dynamic_batch and out.dynamic_hw and out.sha256
    m = Matter(tmp_path / "tiny.onnx", device="cpu")
    assert m.matte(load_photo("coffee.png")).alpha.shape == (400, 600)


def test_export_cli_fp32_fp16_with_parity_and_bundle(tmp_path):
    from cvmatte.export.tf_graph import convert_tf_graph

    converted = convert_tf_graph(build_cv_unet_like_graph(tmp_path / "g.pb"), tmp_path / "src", name="tiny-cvunet")
    calib = tmp_path / "calib"
    write_demo_photos(calib)
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "cvmatte", "export", str(converted.core), "-o", str(out),
                           "--precision", "fp32,fp16", "--calib", str(calib)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for precision in ("fp32", "fp16"):
        spec = zoo.resolve(out / f"tiny-cvunet.{precision}.onnx").spec
        assert spec.precision == precision and spec.input_dtype == "float32"
    rows = json.loads((out / "parity.json").read_text())
    assert {r["step"] for r in rows} == {"fp32 (cleaned)", "fp16"}
    assert all(r["passed"] for r in rows)
    assert all(k in rows[0] for k in ("max_abs", "mean_abs", "sad", "iou", "tolerance"))
    build = (out / "BUILD.md").read_text()
    assert "trtexec --onnx=tiny-cvunet.fp16.onnx" in build and "cvmatte export tiny-cvunet.fp16.onnx" in build
    alpha = Matter(out / "tiny-cvunet.fp16.onnx", device="cpu").matte(load_photo("coffee.png")).alpha
    assert alpha.shape == (400, 600)


def test_int8_that_cannot_meet_the_tolerance_is_refused(tmp_path, photos, monkeypatch):
    """The tiny graph's random weights amplify quantization noise in every layer: INT8 must say
    so rather than ship a model that fails parity."""
    from cvmatte.engine.errors import ModelError
    from cvmatte.export.convert import export
    from cvmatte.export.onnx_passes import to_int8
    from cvmatte.export.parity import Tolerance
    from cvmatte.export.tf_graph import convert_tf_graph

    converted = convert_tf_graph(build_cv_unet_like_graph(tmp_path / "g.pb"), tmp_path / "src", name="tiny")
    calib = write_demo_photos(tmp_path / "calib")
    strict = Tolerance(max_abs=0.05, mean_abs=0.005, min_iou=0.99, max_sad=0.5)
    with pytest.raises(ModelError, match="does not quantize"):
        to_int8(converted.core, tmp_path / "tiny.int8.onnx", converted.spec, calib, photos, strict, log=lambda *_: None)
    assert not (tmp_path / "tiny.int8.onnx").exists()
    # Through `export`: the user keeps the FP32 file that passes, told why there is no INT8 one.
    from cvmatte.export import parity

    monkeypatch.setitem(parity.TOLERANCES, "int8", strict)
    said = []
    report = export(converted.core, tmp_path / "out", ["fp32", "int8"], calib_dir=tmp_path / "calib", log=said.append)
    assert set(report.files) == {"fp32"} and "int8" in report.skipped
    assert any("best file that passes parity is tiny.fp32.onnx" in line for line in said)


@pytest.mark.slow
def test_u2netp_int8_keeps_parity_with_qdq_nodes(tmp_path):
    """The real model: INT8 Q/DQ convolutions calibrated on real photos, layers that break parity
    found and kept in float, the result within the INT8 tolerance of FP32 (about 90 s here)."""
    import onnx

    from cvmatte.export.convert import export

    report = export("u2netp", tmp_path, ["fp32", "int8"], log=lambda *_: None)
    assert report.passed, report.parity
    int8 = zoo.resolve(report.files["int8"])
    ops = [n.op_type for n in onnx.load(str(int8.path)).graph.node]
    assert ops.count("QuantizeLinear") > 50 and "DequantizeLinear" in ops
    calibration = int8.spec.extra["calibration"]
    assert calibration["images"] == len(PHOTOS) and calibration["activations"] == "int8 symmetric"
    # 56 of u2netp's 119 convolutions with 7-bit weights (the same result on VNNI and AVX2 hosts).
    assert calibration["quantized_convolutions"] >= 40
    assert (tmp_path / "u2netp.int8.calib.json").is_file()
    alpha = Matter(int8.path, device="cpu").matte(load_photo("coffee.png")).alpha
    reference = Matter(report.files["fp32"], device="cpu").matte(load_photo("coffee.png")).alpha
    assert np.abs(alpha - reference).mean() < 0.02


def test_export_of_u2netp_keeps_parity_in_fp16(tmp_path):
    from cvmatte.export.convert import export

    report = export("u2netp", tmp_path, ["fp32", "fp16"], log=lambda *_: None)
    assert report.passed, report.parity
    assert zoo.resolve(report.files["fp16"]).spec.precision == "fp16"
    # The Resize nodes' empty scales are omitted, so the FP16 graph passes the ONNX checker.
    import onnx

    onnx.checker.check_model(onnx.load(str(report.files["fp16"])))


def test_parity_judge_fails_outside_tolerance():
    from cvmatte.export import parity

    a = [np.zeros((32, 32), np.float32)]
    b = [np.full((32, 32), 0.2, np.float32)]
    row = parity.judge("x", "y", parity.compare(a, b), parity.TOLERANCES["fp16"])
    assert not row["passed"] and any("mean" in f for f in row["failures"])
    assert parity.judge("x", "y", parity.compare(a, a), parity.TOLERANCES["fp32"])["passed"]


def test_engine_mismatch_is_refused_with_the_reason():
    from cvmatte.engine.backends.tensorrt_build import EngineMeta, check_engine_compatible

    meta = EngineMeta("10.3.0", "Orin", "8.7", 1, 8, 8, (320, 320), "ab")
    check_engine_compatible(meta, "10.3.0", "Orin", "8.7")  # same machine: fine
    with pytest.raises(DeviceError, match="TensorRT 10.3.0.*11.4.0"):
        check_engine_compatible(meta, "11.4.0", "Orin", "8.7")
    with pytest.raises(DeviceError, match="built for Orin.*H100"):
        check_engine_compatible(meta, "10.3.0", "NVIDIA H100", "9.0")


def test_trt_build_without_tensorrt_says_what_to_install(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    from cvmatte.engine.backends.tensorrt_build import build_engine

    with pytest.raises(DeviceError, match="tensorrt"):
        build_engine(tmp_path / "x.onnx", ModelSpec(name="x", input_size=(32, 32), input_name="i", output_name="o"),
                     tmp_path / "x.engine")


@pytest.mark.gpu
def test_trt_engine_builds_and_matches_onnx(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it comes from NVIDIA's index or JetPack)")
    from cvmatte.export.convert import export

    report = export("u2netp", tmp_path, ["fp32"], trt=True, log=lambda *_: None)
    assert report.files["fp32-engine"].is_file()


def _composites(folder, n, megapixels=0.3):
    """Synthetic product shots with their exact alpha beside (<stem>.alpha.png)."""
    from PIL import Image

    from cvmatte.samples import make_composite

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = make_composite(megapixels, seed=i, fg_photo=("coffee.png", "chelsea.png")[i % 2])
        Image.fromarray(c.rgb).save(folder / f"shot_{i}.jpg", quality=95)
        Image.fromarray((c.alpha * 255 + 0.5).astype(np.uint8)).save(folder / f"shot_{i}.alpha.png")
    return folder


def test_openvino_export_gates_bf16_and_refuses_an_int8_file_outside_its_gate(tmp_path):
    """u2netp quantized whole (no exact alpha in the calibration folder, so no accuracy control)
    loses its decoder's precision-sensitive layers: its gate fails against exact alpha, and no
    file of it is left behind. bf16's gate is measured where the CPU has bf16, and written into
    the fp32 file's spec either way it goes."""
    pytest.importorskip("nncf", reason="NNCF (the export extra) is not installed")
    from cvmatte.engine.backends.openvino import capabilities
    from cvmatte.export.convert import export

    calib = tmp_path / "calib"
    write_demo_photos(calib)
    truth = _composites(tmp_path / "truth", 4)
    out = tmp_path / "out"
    report = export("u2netp", out, ["fp32", "bf16", "int8"], calib, backend="openvino", truth_dir=truth,
                    log=lambda *_: None)
    gate = report.gates["int8"]
    assert not gate["passed"] and gate["sad_change"] > 0.02 and gate["truth_images"] == 4
    assert "int8" in report.skipped and "int8" not in report.files
    assert not list(out.glob("u2netp.int8.*"))
    spec = zoo.resolve(out / "u2netp.fp32.onnx").spec
    if "BF16" in capabilities("CPU"):
        assert spec.precision_gate["bf16"] == report.gates["bf16"]
        assert {"passed", "evidence", "sad_change", "photo_iou_min"} <= set(spec.precision_gate["bf16"])
    else:
        assert "bf16" in report.skipped and "cannot be measured here" in report.skipped["bf16"]


def test_the_gate_passes_a_candidate_equal_to_its_reference_and_fails_a_worse_one(tmp_path):
    """The gate itself, on real photos and exact alpha: fp32 against fp32 passes with no change;
    an INT8 file of u2netp quantized whole fails on exact alpha, not only on agreement."""
    pytest.importorskip("nncf", reason="NNCF (the export extra) is not installed")
    from cvmatte.engine.backends.openvino import OpenVinoBackend
    from cvmatte.export import openvino as ov_export
    from cvmatte.export.parity import TOLERANCES, load_images

    model = zoo.resolve("u2netp")
    photos = load_images(write_demo_photos(tmp_path / "photos"))
    truth = ov_export.load_truth(ov_export.truth_pairs(_composites(tmp_path / "truth", 3)))
    same = ov_export.gate(OpenVinoBackend(model), OpenVinoBackend(model), model.spec, "fp32", photos, truth,
                          TOLERANCES["fp32"], log=lambda *_: None)
    assert same["passed"] and same["sad_change"] == 0.0 and same["photo_iou_min"] == 1.0
    int8 = ov_export.quantize_int8(model, tmp_path / "q" / "u2netp.int8.xml", write_demo_photos(tmp_path / "c"),
                                   log=lambda *_: None)
    assert int8.spec.precision == "int8" and int8.path.with_suffix(".bin").is_file()
    worse = ov_export.int8_gate(model, int8, photos, truth, log=lambda *_: None)
    assert not worse["passed"] and "SAD against exact alpha" in worse["evidence"]
