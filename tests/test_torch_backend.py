"""The torch backend's precisions and torch.compile: BF16 runs on CPUs that have it and is refused elsewhere, torch.compile runs
on the CPU (inductor's C++ backend) with the eager result, once per input shape, and falls back to
eager with a log line where it cannot compile. The GPU paths (BF16, compile with CUDA graphs) carry
the `gpu` marker and are skipped with a reason without CUDA."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cvmatte.engine import zoo  # noqa: E402
from cvmatte.engine.backends import create_backend  # noqa: E402
from cvmatte.engine.backends import torch_backend  # noqa: E402
from cvmatte.engine.batching import DynamicBatcher  # noqa: E402
from cvmatte.engine.errors import DeviceError  # noqa: E402

SHAPE = (2, 3, 96, 96)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny CV-UNet checkpoint (cvunet-xs, 96 px), resolved as a model."""
    from cvmatte.engine.nets.checkpoint import save_checkpoint
    from cvmatte.engine.nets.cvunet import build
    from cvmatte.engine.spec import ModelSpec

    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    torch.manual_seed(0)
    spec = ModelSpec(name="tiny-cvunet", input_size=(96, 96), input_name="image", output_name="alpha",
                     dynamic_hw=True)
    save_checkpoint(path, build("cvunet-xs").eval(), spec)
    return zoo.resolve(path)


def _x(n=SHAPE[0], seed=0):
    return np.random.default_rng(seed).normal(size=(n, *SHAPE[1:])).astype(np.float32)


def test_bf16_on_the_cpu_where_it_has_bf16_else_refused(tiny):
    if not torch_backend._cpu_has_bf16(torch):
        with pytest.raises(DeviceError, match="BF16 on CPUs with AVX-512 BF16 or AMX"):
            create_backend(tiny, "torch", device="cpu", precision="bf16")
    else:
        bf16 = create_backend(tiny, "torch", device="cpu", precision="bf16")
        x = _x()
        ref = create_backend(tiny, "torch", device="cpu").run(x)
        got = bf16.run(x)
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert 0 < np.abs(got - ref).max() < 0.05  # bf16's rounding, not another network
        assert "bf16" in bf16.describe()
    with pytest.raises(DeviceError, match="FP16 on CUDA only"):
        create_backend(tiny, "torch", device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="fp32, fp16, bf16"):
        create_backend(tiny, "torch", device="cpu", precision="int8")
    if not torch.cuda.is_available():
        fell = create_backend(tiny, "torch", device="cuda", precision="bf16", allow_cpu_fallback=True)
        assert fell.fell_back and fell.precision == ("bf16" if torch_backend._cpu_has_bf16(torch) else "fp32")


@pytest.mark.slow
def test_compile_on_the_cpu_matches_eager_and_compiles_each_shape_once(tiny):
    eager = create_backend(tiny, "torch", device="cpu")
    compiled = create_backend(tiny, "torch", device="cpu", compile=True)
    if compiled.compile_error:  # no C++ compiler here: the fallback is tested below
        pytest.skip(f"inductor cannot compile on this machine: {compiled.compile_error}")
    assert compiled.static_batch and compiled.compile_s == {}
    x = _x()
    got = compiled.run(x)
    assert list(compiled.compile_s) == [SHAPE] and compiled.compile_s[SHAPE] > 0
    first = dict(compiled.compile_s)
    assert np.abs(got - eager.run(x)).max() < 1e-4
    # The same shape again, by run, by the batcher (3 images: the tail batch is padded to 2) and
    # by infer: no second compile.
    assert np.abs(compiled.run(_x(seed=1)) - eager.run(_x(seed=1))).max() < 1e-4
    x3 = _x(3, seed=2)
    with DynamicBatcher(compiled, batch_size=2, flush_ms=1) as batcher:
        assert np.abs(batcher.run(x3) - eager.run(x3)).max() < 1e-4
    on_device = compiled.infer(torch.from_numpy(x))
    assert isinstance(on_device, torch.Tensor) and on_device.shape == (2, 1, 96, 96)
    assert np.abs(on_device.numpy() - eager.run(x)).max() < 1e-4
    assert compiled.compile_s == first
    text = compiled.describe()
    assert "torch.compile" in text and "2x3x96x96 in" in text and "eager" not in text


def test_compile_falls_back_to_eager_where_inductor_cannot_work(tiny, monkeypatch, caplog):
    monkeypatch.setattr(torch_backend, "_why_no_compile", lambda torch, cuda: "no C++ compiler (g++) found")
    eager = create_backend(tiny, "torch", device="cpu")
    with caplog.at_level(logging.WARNING, logger="cvmatte"):
        b = create_backend(tiny, "torch", device="cpu", compile=True)
    assert "torch.compile cannot run here (no C++ compiler (g++) found)" in caplog.text
    x = _x()
    assert np.array_equal(b.run(x), eager.run(x))
    assert b.compile_s == {} and "torch eager fp32" in b.describe() and "torch.compile not used" in b.describe()


def test_a_compile_error_at_the_first_batch_falls_back_to_eager(tiny, monkeypatch, caplog):
    """inductor compiles lazily, at the first call: an error there (a C++ or triton failure) must
    not fail the run."""
    def broken_compile(module, **kw):
        def call(x):
            raise RuntimeError("CppCompileError: C++ compile error\nlots of compiler output")
        return call

    monkeypatch.setattr(torch_backend, "_why_no_compile", lambda torch, cuda: None)
    monkeypatch.setattr(torch, "compile", broken_compile)
    eager = create_backend(tiny, "torch", device="cpu")
    b = create_backend(tiny, "torch", device="cpu", compile=True)
    x = _x()
    with caplog.at_level(logging.WARNING, logger="cvmatte"):
        got = b.run(x)
    assert np.array_equal(got, eager.run(x))
    assert "compiling for input 2x3x96x96 failed: RuntimeError: CppCompileError: C++ compile error" in caplog.text
    assert b.compile_s == {} and "torch.compile not used" in b.describe()


def test_infer_on_the_cpu_equals_run(tiny):
    b = create_backend(tiny, "torch", device="cpu")
    x = _x(5)
    b.max_batch = 2  # three model calls
    assert np.abs(b.infer(torch.from_numpy(x)).numpy() - b.run(x)).max() < 1e-5  # batch 2 vs 5: other kernels


def test_other_backends_refuse_compile(tiny):
    refiner = zoo.resolve("cvunet-refiner")  # an ONNX file
    with pytest.raises(DeviceError, match="--compile is torch.compile, for --backend torch"):
        create_backend(refiner, "onnxruntime", device="cpu", compile=True)
    with pytest.raises(DeviceError, match="--compile is torch.compile, for --backend torch"):
        create_backend(refiner, "tensorrt", compile=True)


# --- GPU: skipped with a reason where there is none -------------------------------------------

def _cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here (torch.cuda.is_available() is False)")


@pytest.mark.gpu
def test_bf16_on_cuda_matches_the_cpu(tiny):
    _cuda()
    if not torch.cuda.is_bf16_supported():
        with pytest.raises(DeviceError, match="BF16"):
            create_backend(tiny, "torch", device="cuda", precision="bf16")
        return
    cpu = create_backend(tiny, "torch", device="cpu")
    gpu = create_backend(tiny, "torch", device="cuda", precision="bf16", cuda_graphs=True)
    x = _x(7)
    with DynamicBatcher(gpu, batch_size=4, depth=2, flush_ms=2) as batcher:
        got = batcher.run(x)
    assert np.abs(got - cpu.run(x)).max() < 2e-2  # bf16 on the CPU: max 2.1e-3 from fp32 on this model
    assert "bf16" in gpu.describe()


@pytest.mark.gpu
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_compile_with_cuda_graphs_on_cuda(tiny, precision, tol):
    _cuda()
    cpu = create_backend(tiny, "torch", device="cpu")
    gpu = create_backend(tiny, "torch", device="cuda", precision=precision, cuda_graphs=True, compile=True)
    if gpu.compile_error:
        pytest.skip(f"torch.compile cannot run on this GPU machine: {gpu.compile_error}")
    x = _x(7)
    with DynamicBatcher(gpu, batch_size=4, depth=3, flush_ms=2) as batcher:
        got = batcher.run(x)
    assert np.abs(got - cpu.run(x)).max() < tol
    assert list(gpu.compile_s) == [(4, 3, 96, 96)]  # made at the ring's first slot, reused by the others
    dev = gpu.infer(torch.from_numpy(x).cuda())
    assert dev.is_cuda and np.abs(dev.cpu().numpy() - cpu.run(x)).max() < tol
    assert set(gpu.compile_s) == {(4, 3, 96, 96), (7, 3, 96, 96)}
    dev2 = gpu.infer(torch.from_numpy(x).cuda())
    assert torch.equal(dev, dev2) and len(gpu.compile_s) == 2
    assert "torch.compile + CUDA graphs" in gpu.describe()
