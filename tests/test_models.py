"""Model spec, zoo resolution and the ONNX Runtime backend on the real u2netp."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from cvmatte.engine import zoo
from cvmatte.engine.backends import create_backend
from cvmatte.engine.errors import DeviceError, ModelError
from cvmatte.engine.spec import ModelSpec, sha256_file, spec_path_for


def test_u2netp_is_cached_verified_and_dynamic(matter):
    resolved = matter.model
    assert resolved.path.name == "u2netp.onnx"
    assert sha256_file(resolved.path) == resolved.spec.sha256
    assert resolved.spec.input_size == (320, 320)
    assert zoo.U2NETP_SHA256 in resolved.spec.source
    dims = [d.dim_param for d in onnx.load(str(resolved.path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "N" and dims[2:] == ["H", "W"]


def test_backend_runs_any_batch_and_reports_cpu(matter):
    backend = matter.backend
    assert not backend.on_gpu and "CPU" in backend.providers[0] and "CPU" in backend.describe()
    x = np.random.default_rng(0).normal(size=(3, 3, 320, 320)).astype(np.float32)
    out = backend.run(x)
    assert out.shape == (3, 1, 320, 320)
    assert 0.0 <= out.min() and out.max() <= 1.0
    # Batched equals one at a time.
    single = np.concatenate([backend.run(x[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(out, single, atol=1e-5)


def test_spec_json_round_trip_and_rejects_unknown_fields(tmp_path, matter):
    spec = matter.spec
    assert ModelSpec.from_json(spec.to_json()) == spec
    d = json.loads(spec.to_json())
    d["colour_mode"] = "rgb"
    with pytest.raises(ValueError, match="colour_mode"):
        ModelSpec.from_json(json.dumps(d))


def test_onnx_file_without_spec_is_refused_by_name(tmp_path, matter):
    bare = tmp_path / "mystery.onnx"
    bare.write_bytes(matter.model.path.read_bytes())
    with pytest.raises(ModelError, match="mystery.json"):
        zoo.resolve(bare)


def test_onnx_file_with_spec_beside_it_runs(tmp_path, matter, coffee):
    from cvmatte import Matter

    copy = tmp_path / "my-model.onnx"
    copy.write_bytes(matter.model.path.read_bytes())
    matter.spec.save(spec_path_for(copy))
    m = Matter(copy, device="cpu")  # no INT8 file beside the copy: fp32
    assert m.backend.precision == "fp32"
    ref = Matter(matter.model.path, device="cpu", precision="fp32")
    np.testing.assert_allclose(m.matte(coffee).alpha, ref.matte(coffee).alpha, atol=1e-5)


def test_unknown_model_name_lists_the_zoo():
    with pytest.raises(ModelError, match="u2netp"):
        zoo.resolve("no-such-model")


def test_tampered_file_is_not_taken_from_cache_and_bad_bytes_are_refused(tmp_path, matter):
    dest = tmp_path / "u2netp"
    dest.mkdir()
    (dest / "u2netp.onnx").write_bytes(matter.model.path.read_bytes())
    matter.spec.save(dest / "u2netp.json")
    assert zoo.cached("u2netp", tmp_path) is not None
    (dest / "u2netp.onnx").write_bytes(b"not the model")
    assert zoo.cached("u2netp", tmp_path) is None
    with pytest.raises(ModelError, match="sha256"):
        zoo.install_u2netp(b"not the model", dest)


def test_cv_unet_offline_says_what_file_to_pass(tmp_path):
    with pytest.raises(ModelError, match="tf_graph.pb"):
        zoo.resolve("cv-unet-universal", tmp_path)


def test_cuda_request_fails_with_a_diagnosis_not_a_silent_cpu_run(matter):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider; the diagnosis path is for CPU-only machines")
    with pytest.raises(DeviceError) as err:
        create_backend(matter.model, device="cuda")
    msg = str(err.value)
    assert "onnxruntime" in msg and "CUDA" in msg
    # Allowed explicitly, the fallback happens and is visible.
    backend = create_backend(matter.model, device="cuda", allow_cpu_fallback=True)
    assert backend.providers == ["CPUExecutionProvider"] and backend.fell_back
    assert "fell back" in backend.describe()


def test_import_cvmatte_pulls_no_heavy_stack():
    code = (
        "import sys, cvmatte, cvmatte.engine.matting, cvmatte.engine.catalog, cvmatte.server, cvmatte.cli\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'tensorrt', 'cuda', 'pycuda', 'modelscope') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


PACKAGED = {n: ModelSpec.load(zoo.PACKAGED / f"{n}.json") for n, e in zoo.ZOO.items() if e.source == "packaged with cvmatte"}


@pytest.mark.parametrize("name", [n for n, spec in PACKAGED.items() if spec.in_channels == 3] or ["none"])
def test_packaged_students_resolve_verify_and_cut_out(tmp_path, name, coffee):
    if name == "none":
        pytest.skip("no student is packaged in engine/models yet")
    from cvmatte import Matter

    resolved = zoo.resolve(name, tmp_path)  # copied from the package into an empty cache
    assert sha256_file(resolved.path) == resolved.spec.sha256
    r = Matter(name, device="cpu", cache_dir=tmp_path).matte(coffee)
    assert r.alpha[100:180, 210:360].mean() > 0.8  # the cup
    assert r.alpha[:40, 500:].mean() < 0.2  # the table


def test_packaged_refiner_is_the_one_measured(tmp_path):
    """The learned tile refiner that ships is the file measured in benchmarks/NOTES.md (issue 17:
    better than the guided filter on held-out real soft mattes, worse on hard product outlines,
    so not the default), trained on the coarse alpha of u2netp-product, the default then. Its quality is measured by
    benchmarks/soft_edges.py on data CI does not download (1.3 GB); tests/test_refiner.py checks
    that it changes the band, and only the band, from its MIN_SCALE on."""
    assert "cvunet-refiner" in PACKAGED and PACKAGED["cvunet-refiner"].in_channels == 4
    resolved = zoo.resolve("cvunet-refiner", tmp_path)
    assert sha256_file(resolved.path) == resolved.spec.sha256
    assert resolved.spec.sha256.startswith("21e2f18513b6")
    assert "coarse alpha of u2netp-product " in resolved.spec.source  # the default when it was trained