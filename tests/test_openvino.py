"""The OpenVINO backend against ONNX Runtime on real photos (the demo photos, scikit-image's), any
input shape and batch through the batcher, its clear refusals, bf16 where the CPU has it (skipped
with a reason where it does not: CI hosts differ in ISA), and the automatic choice of backend and
precision that every run prints."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed")

from cvmatte import Matter  # noqa: E402
from cvmatte.engine import zoo  # noqa: E402
from cvmatte.engine.backends import choose_runtime, create_backend  # noqa: E402
from cvmatte.engine.backends.openvino import capabilities, int8_exact_here  # noqa: E402
from cvmatte.engine.batching import DynamicBatcher  # noqa: E402
from cvmatte.engine.errors import DeviceError  # noqa: E402
from cvmatte.engine.preprocess import coarse_input  # noqa: E402
from cvmatte.engine.spec import ModelSpec, ResolvedModel, spec_path_for  # noqa: E402
from cvmatte.samples import PHOTOS, load_photo  # noqa: E402

HAS_BF16 = "BF16" in capabilities("CPU")
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 arithmetic for OpenVINO "
                                "(it needs AVX-512 BF16 or AMX)")


@pytest.fixture(scope="module")
def u2netp():
    return zoo.resolve("u2netp")


@pytest.fixture(scope="module")
def photos():
    return [load_photo(p) for p in PHOTOS]


def _batch(model, photos, hw=None):
    spec = model.spec
    if hw is not None:
        spec = dataclasses.replace(spec, input_size=hw)
    return np.stack([coarse_input(p, spec) for p in photos])


def test_fp32_matches_onnxruntime_on_real_photos_at_two_shapes_and_a_batch(u2netp, photos):
    ov = create_backend(u2netp, "openvino", "cpu", precision="fp32")
    ort = create_backend(u2netp, "onnxruntime", "cpu")
    assert ov.precision == "fp32" and "openvino fp32" in ov.describe()
    for hw in [(320, 320), (256, 416)]:
        x = _batch(u2netp, photos, hw)
        a, b = ov.run(x), ort.run(x)
        assert a.shape == b.shape == (len(photos), 1, *hw)
        assert np.abs(a - b).max() <= 1e-3
        assert 0.0 <= a.min() and a.max() <= 1.0
    # The objects are really there: alpha spans background to foreground on every photo.
    assert all(a[i].max() > 0.9 and a[i].min() < 0.1 for i in range(len(photos)))


def test_batches_of_two_shapes_through_the_batcher(u2netp, photos):
    ov = create_backend(u2netp, "openvino", "cpu")
    batcher = DynamicBatcher(ov, batch_size=3, flush_ms=50)
    try:
        inputs = [coarse_input(p, u2netp.spec) for p in photos] + list(_batch(u2netp, photos[:2], (224, 288)))
        futures = [batcher.submit(x) for x in inputs]
        outs = [f.result(timeout=120)[0] for f in futures]
    finally:
        batcher.close()
    for x, out in zip(inputs, outs):
        assert out.shape == (1, *x.shape[1:])
        np.testing.assert_allclose(out, ov.run(x[None])[0], atol=1e-5)
    assert batcher.stats.batches < len(inputs)  # inputs of one shape shared batches


def test_refusals_are_one_line_and_say_what_to_do(u2netp, monkeypatch):
    with pytest.raises(DeviceError, match="OpenVINO finds no NPU here"):
        create_backend(u2netp, "openvino", "npu")
    with pytest.raises(DeviceError, match="NVIDIA GPUs are for"):
        create_backend(u2netp, "openvino", "cuda")
    with pytest.raises(DeviceError, match="int8 model is an ONNX file"):
        create_backend(u2netp, "openvino", "cpu", precision="int8")
    with pytest.raises(DeviceError, match="--compile"):
        create_backend(u2netp, "openvino", "cpu", compile=True)
    with pytest.raises(DeviceError, match="is an inference precision of --backend openvino"):
        create_backend(u2netp, "onnxruntime", "cpu", precision="bf16")
    # The package missing: the one line names what to install.
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(DeviceError, match="pip install openvino"):
        create_backend(u2netp, "openvino", "cpu")


def test_bf16_where_the_cpu_has_it_else_refused(u2netp, photos):
    if not HAS_BF16:
        with pytest.raises(DeviceError, match="has no bf16 arithmetic"):
            create_backend(u2netp, "openvino", "cpu", precision="bf16")
        return
    bf16 = create_backend(u2netp, "openvino", "cpu", precision="bf16")
    assert bf16.precision == "bf16" and "openvino bf16" in bf16.describe()
    x = _batch(u2netp, photos)
    ref = create_backend(u2netp, "openvino", "cpu").run(x)
    got = bf16.run(x)
    diff = np.abs(got - ref)
    assert 0 < diff.mean() < 0.02  # rounded, not another model
    ious = [((a > 0.5) & (b > 0.5)).sum() / ((a > 0.5) | (b > 0.5)).sum() for a, b in zip(got, ref)]
    assert np.mean(ious) > 0.9


@needs_bf16
def test_fp32_layers_stay_fp32_under_bf16(u2netp):
    bf16 = create_backend(u2netp, "openvino", "cpu", precision="bf16")
    _, request, _ = bf16._request((1, 3, 320, 320))
    runtime = request.get_compiled_model().get_runtime_model()
    precision = {op.get_friendly_name(): op.get_rt_info()["runtimePrecision"].astype(str)
                 for op in runtime.get_ordered_ops() if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    kept = [p for name, p in precision.items() if any(name.startswith(k) for k in u2netp.spec.fp32_layers)]
    assert kept and set(kept) == {"f32"}
    assert list(precision.values()).count("bf16") > 100


def _copy_with_gate(model: ResolvedModel, folder, gate: dict) -> ResolvedModel:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / model.path.name
    shutil.copyfile(model.path, path)
    spec = dataclasses.replace(model.spec, precision_gate=gate)
    spec.save(spec_path_for(path))
    return ResolvedModel(path, spec)


def test_auto_chooses_the_fastest_precision_that_passed_its_gate(u2netp, tmp_path):
    passed = _copy_with_gate(u2netp, tmp_path / "passed", {"bf16": {"passed": True, "evidence": "measured"}})
    failed = _copy_with_gate(u2netp, tmp_path / "failed", {"bf16": {"passed": False, "evidence": "SAD +9%"}})
    a, b = choose_runtime(passed, device="cpu"), choose_runtime(failed, device="cpu")
    assert a.backend == b.backend == "openvino"
    assert b.precision == "fp32"
    if HAS_BF16:
        assert a.precision == "bf16" and "passed its accuracy gate" in a.reason
        assert "failed its accuracy gate (SAD +9%)" in b.reason
    else:  # nothing to choose from on this CPU, and nothing to say about it
        assert a.precision == "fp32" and "bf16" not in a.reason + b.reason
    # Given explicitly, nothing is chosen and nothing is said.
    assert choose_runtime(failed, "onnxruntime", "cpu", "fp32").reason == ""
    with Matter(failed.path, device="cpu") as m:
        assert m.backend.name == "openvino" and m.backend.precision == "fp32"
        assert "chosen: openvino" in m.describe()


def test_the_run_header_says_what_was_chosen_and_why(tmp_path):
    from cvmatte.samples import write_demo_photos

    write_demo_photos(tmp_path / "in")
    proc = subprocess.run([sys.executable, "-m", "cvmatte.cli", "matte", str(tmp_path / "in" / "coffee.jpg"),
                           "-o", str(tmp_path / "out"), "--model", "u2netp", "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    header = proc.stderr.splitlines()[0]
    assert "chosen: openvino (the fastest CPU backend measured)" in header
    if int8_exact_here():  # the packaged INT8 file of u2netp passed its gate
        assert "on openvino int8" in header and "int8 (u2netp.int8.xml): passed its accuracy gate" in header
    else:
        assert "on openvino fp32" in header and "int8 (u2netp.int8.xml) not used: this CPU has no VNNI" in header
        if HAS_BF16:
            assert "bf16 not used: u2netp failed its accuracy gate" in header


def test_a_stale_cached_spec_is_refreshed_from_the_zoo(tmp_path, u2netp):
    cache = tmp_path / "cache"
    (cache / "u2netp").mkdir(parents=True)
    shutil.copyfile(u2netp.path, cache / "u2netp" / "u2netp.onnx")
    old = dataclasses.replace(u2netp.spec, fp32_layers=(), precision_gate={})
    old.save(cache / "u2netp" / "u2netp.json")
    fresh = zoo.resolve("u2netp", cache)
    assert fresh.spec.fp32_layers == zoo.U2NETP_FP32_LAYERS and fresh.spec.precision_gate
    assert ModelSpec.load(cache / "u2netp" / "u2netp.json") == fresh.spec
