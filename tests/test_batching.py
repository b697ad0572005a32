"""The dynamic batcher and its ring of staging buffers, on the real u2netp model with ONNX Runtime's
CPU backend and on real photos: batched results equal unbatched ones bit for bit, part-filled
batches leave after the flush time (on a clock the test moves: no test here asserts a wall-clock
limit), the ring is allocated once and reused, errors reach the right callers. The torch backend
on the CPU; the GPU paths carry the `gpu` marker."""

from __future__ import annotations

import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from cvmatte import Matter
from cvmatte.samples import PHOTOS, load_photo, make_composite, write_demo_photos
from cvmatte.engine import batching, preprocess, zoo
from cvmatte.engine.backends import create_backend
from cvmatte.engine.backends.onnxruntime import OrtBackend
from cvmatte.engine.batching import DynamicBatcher
from cvmatte.engine.errors import DeviceError


class CountingOrt(OrtBackend):
    """The real ORT CPU backend, counting the slots it allocates and the batch sizes it runs."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.slots_made = 0
        self.launched: list[int] = []
        #: Set at the first launch: a test waits on it instead of on the wall clock.
        self.launch_seen = threading.Event()

    def make_slot(self, index, batch, chw):
        self.slots_made += 1
        return super().make_slot(index, batch, chw)

    def launch(self, slot, n):
        self.launched.append(n if not self.static_batch else len(slot.host_in))
        self.launch_seen.set()
        super().launch(slot, n)


@pytest.fixture(scope="module")
def u2netp():
    return zoo.resolve("u2netp")


@pytest.fixture(scope="module")
def photo_inputs(u2netp):
    """Model inputs of the real demo photos: whole images at 320², plus 192x256 crops."""
    photos = [load_photo(name) for name in PHOTOS]
    whole = [preprocess.coarse_input(p, u2netp.spec) for p in photos]
    crops = [preprocess.normalize(cv2.resize(p, (256, 192)), u2netp.spec) for p in photos[:3]]
    return whole + crops


def test_batches_from_many_threads_equal_one_at_a_time_bit_for_bit(u2netp, photo_inputs):
    backend = CountingOrt(u2netp, device="cpu")
    expected = [backend.run(x[None])[0] for x in photo_inputs]
    backend.launched.clear()
    futures = [None] * len(photo_inputs)

    def client(k):
        for i in range(k, len(photo_inputs), 3):
            futures[i] = batcher.submit(photo_inputs[i])

    with DynamicBatcher(backend, batch_size=3, depth=2, flush_ms=200) as batcher:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = [f.result()[0] for f in futures]
    for e, g in zip(expected, got):
        assert g.shape == e.shape and np.array_equal(g, e)
    s = batcher.stats
    assert s.items == len(photo_inputs) and sum(backend.launched) == len(photo_inputs)
    assert max(backend.launched) == 3 and s.batches < len(photo_inputs)  # shared launches
    assert s.shapes == {(3, 320, 320), (3, 192, 256)}
    assert backend.slots_made == 2 * 2  # depth 2 per shape, allocated once
    assert 0 < s.busy_fraction <= 1.0


def test_the_ring_is_reused_for_a_long_run(u2netp, photo_inputs):
    backend = CountingOrt(u2netp, device="cpu")
    x = photo_inputs[0]
    with DynamicBatcher(backend, batch_size=2, depth=3, flush_ms=1) as batcher:
        futures = [batcher.submit(x) for _ in range(20)]
        outs = [f.result()[0] for f in futures]
    assert backend.slots_made == 3 and batcher.stats.batches >= 10
    assert all(np.array_equal(o, outs[0]) for o in outs)


class FrozenClock:
    """Stands in for the batcher's `time` module: perf_counter() stands still until the test moves
    it, so "flush_ms have passed" happens when the test says and not when a loaded machine
    happens to get there."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now


def test_a_part_filled_batch_leaves_after_the_flush_time(u2netp, photo_inputs, monkeypatch):
    """No wall-clock limits: the batcher's clock is the test's. Before its flush time a lone input
    waits for companions; once the clock passes it, the part-filled batch is launched with no more
    input arriving, and counted as flushed early. run() launches at once, clock standing still.
    The timeouts only guard against a hang."""
    clock = FrozenClock()
    monkeypatch.setattr(batching, "time", clock)
    backend = CountingOrt(u2netp, device="cpu")
    with DynamicBatcher(backend, batch_size=8, flush_ms=50) as batcher:
        future = batcher.submit(photo_inputs[0])
        # The dispatcher looks again every flush_ms of real time, sees the clock standing still
        # and keeps waiting: no launch, however long this takes.
        assert not backend.launch_seen.wait(0.3) and backend.launched == [] and not future.done()
        clock.now += 0.051  # past the flush time; nothing else is submitted
        out, _ = future.result(timeout=120)
        assert backend.launched == [1] and batcher.stats.flushed_early == 1 and batcher.stats.batches == 1
        # run() has nothing more to add: launched without waiting for companions or the clock.
        got = []
        caller = threading.Thread(target=lambda: got.append(batcher.run(photo_inputs[0][None])), daemon=True)
        caller.start()
        caller.join(timeout=120)
        assert got and backend.launched == [1, 1]
    assert np.array_equal(out, backend.run(photo_inputs[0][None])[0]) and np.array_equal(got[0][0], out)


def test_static_batches_are_padded_and_the_padding_never_leaks(u2netp, photo_inputs):
    backend = CountingOrt(u2netp, device="cpu")
    backend.static_batch = True
    expected = backend.run(np.stack(photo_inputs[:3]))
    with DynamicBatcher(backend, batch_size=4, flush_ms=1) as batcher:
        got = batcher.run(np.stack(photo_inputs[:3]))
    assert backend.launched == [4] and np.array_equal(got, expected)


def test_a_failing_launch_fails_only_its_own_inputs(u2netp, photo_inputs):
    backend = CountingOrt(u2netp, device="cpu")
    with DynamicBatcher(backend, batch_size=2, flush_ms=1) as batcher:
        bad = batcher.submit(np.zeros((5, 64, 64), np.float32))  # 5 channels: ONNX Runtime refuses it
        with pytest.raises(Exception):
            bad.result()
        out, _ = batcher.submit(photo_inputs[0], flush=True).result()
    assert np.array_equal(out, backend.run(photo_inputs[0][None])[0])


def test_file_pipeline_through_the_batcher_equals_unbatched_images(tmp_path):
    """Real photos and a bad file through matte_files (coarse pass batched 3 at a time, flushed
    part-filled at the end) give the same alpha PNGs as mattting each photo alone."""
    photos = write_demo_photos(tmp_path / "in")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    m = Matter("u2netp", device="cpu", batch_size=3, flush_ms=50)
    report = m.matte_files([tmp_path / "in"], tmp_path / "out", alpha=True)
    assert len(report.succeeded) == len(photos) and len(report.failed) == 1
    assert "broken.jpg" in report.failed[0].error
    assert report.batching.batch_size == 3 and report.batching.items == len(photos)
    assert "model busy" in report.batching.summary()
    for r in report.succeeded:
        alone = m.matte(r.input).alpha_u8
        written = cv2.imread(r.outputs["alpha"], cv2.IMREAD_UNCHANGED)
        assert np.array_equal(written, alone), r.input


def test_learned_refiner_tiles_of_two_images_share_batches_and_match_alone():
    shots = [make_composite(4.0, seed=s, fg_photo="chelsea.png", bg_photo="motorcycle_left.png").rgb for s in (3, 4)]
    m = Matter("u2netp", device="cpu", despill=0.0, refiner="cvunet-refiner", tile_batch=4, flush_ms=100)
    alone = [m.engine.matte(s).alpha for s in shots]
    batcher = m.engine.refiner.batcher
    before = batcher.stats.batches
    results = [None, None]

    def work(k):
        results[k] = m.engine.matte(shots[k]).alpha

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, r in zip(alone, results):
        assert np.array_equal(a, r)
    assert batcher.stats.batches > before


def _tiny_checkpoint(path, in_channels=3):
    torch = pytest.importorskip("torch")
    from cvmatte.engine.nets.checkpoint import save_checkpoint
    from cvmatte.engine.nets.cvunet import build
    from cvmatte.engine.spec import ModelSpec

    torch.manual_seed(0)
    model = build("cvunet-xs", in_channels).eval()
    spec = ModelSpec(name="tiny-cvunet", input_size=(96, 96), input_name="image", output_name="alpha",
                     dynamic_hw=True, in_channels=in_channels)
    save_checkpoint(path, model, spec)
    return model, spec


def test_torch_backend_runs_a_checkpoint_like_its_onnx_export(tmp_path):
    from cvmatte.export.torch_export import export_checkpoint

    _tiny_checkpoint(tmp_path / "tiny.pt")
    export_checkpoint(tmp_path / "tiny.pt", tmp_path)
    torch_b = create_backend(zoo.resolve(tmp_path / "tiny.pt"), "torch", device="cpu")
    ort_b = create_backend(zoo.resolve(tmp_path / "tiny-cvunet.onnx"), device="cpu")
    x = np.random.default_rng(0).normal(size=(3, 3, 96, 96)).astype(np.float32)
    assert np.abs(torch_b.run(x) - ort_b.run(x)).max() < 1e-4
    with DynamicBatcher(torch_b, batch_size=2, flush_ms=1) as batcher:
        assert np.abs(batcher.run(x) - torch_b.run(x)).max() < 1e-5
    assert "torch eager fp32" in torch_b.describe()


def test_torch_backend_says_why_it_cannot_use_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _tiny_checkpoint(tmp_path / "tiny.pt")
    model = zoo.resolve(tmp_path / "tiny.pt")
    with pytest.raises(DeviceError, match="cuda"):
        create_backend(model, "torch", device="cuda")
    with pytest.raises(DeviceError, match="FP16"):
        create_backend(model, "torch", device="cpu", precision="fp16")
    fell = create_backend(model, "torch", device="cuda", allow_cpu_fallback=True, precision="fp16")
    assert fell.fell_back and "fell back to CPU" in fell.describe()


def test_torch_backend_refuses_an_onnx_model_it_has_no_port_for(tmp_path):
    pytest.importorskip("torch")
    from cvmatte.engine.errors import ModelError

    refiner = zoo.resolve("cvunet-refiner")  # a CV-UNet in ONNX: run it from its checkpoint instead
    with pytest.raises(ModelError, match="not a U²-Net-p.*onnxruntime"):
        create_backend(refiner, "torch", device="cpu")


def test_tensorrt_backend_without_tensorrt_or_gpu_is_a_clear_error(u2netp):
    with pytest.raises(DeviceError, match="tensorrt|GPU|driver"):
        create_backend(u2netp, "tensorrt")


def test_gpu_modules_stay_unloaded_on_the_cpu_path(tmp_path):
    code = ("import sys, numpy as np\n"
            "from cvmatte import Matter\n"
            "m = Matter('u2netp', device='cpu', batch_size=2)\n"
            "m.matte(np.full((64, 80, 3), 200, np.uint8))\n"
            f"m.matte_files([{str(write_demo_photos(tmp_path / 'in')[0])!r}], {str(tmp_path / 'out')!r})\n"
            "print([k for k in ('torch', 'tensorrt', 'cuda', 'cuda.bindings', 'pycuda') if k in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- GPU: skipped with a reason where there is none -------------------------------------------

def _cuda_torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here (torch.cuda.is_available() is False)")
    return torch


@pytest.mark.gpu
@pytest.mark.parametrize("graphs,precision,tol", [(False, "fp32", 1e-3), (True, "fp32", 1e-3), (True, "fp16", 2e-2)])
def test_torch_cuda_ring_matches_the_cpu(tmp_path, graphs, precision, tol):
    _cuda_torch()
    _tiny_checkpoint(tmp_path / "tiny.pt")
    model = zoo.resolve(tmp_path / "tiny.pt")
    cpu = create_backend(model, "torch", device="cpu")
    gpu = create_backend(model, "torch", device="cuda", precision=precision, cuda_graphs=graphs)
    x = np.random.default_rng(0).normal(size=(7, 3, 96, 96)).astype(np.float32)
    with DynamicBatcher(gpu, batch_size=4, depth=3, flush_ms=2) as batcher:
        got = batcher.run(x)
        slot = batcher._rings[(3, 96, 96)].slots[0]
        assert slot.state.host_in.is_pinned() and slot.state.host_out.is_pinned()
    assert np.abs(got - cpu.run(x)).max() < tol
    assert batcher.stats.busy_s > 0


@pytest.mark.gpu
def test_onnxruntime_cuda_binds_pinned_buffers(u2netp, photo_inputs):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDA provider (CPU package)")
    try:
        gpu = create_backend(u2netp, device="cuda")
    except DeviceError as e:
        pytest.skip(f"CUDA provider not usable: {e}")
    cpu = create_backend(u2netp, device="cpu")
    x = np.stack(photo_inputs[:5])
    with DynamicBatcher(gpu, batch_size=4, flush_ms=2) as batcher:
        got = batcher.run(x)
    assert gpu.bind_pinned and np.abs(got - cpu.run(x)).max() < 1e-3


def test_a_slot_that_cannot_be_allocated_fails_its_inputs_not_the_batcher(u2netp, photo_inputs):
    class NoMemoryFor192(CountingOrt):
        def make_slot(self, index, batch, chw):
            if chw[1] == 192:
                raise DeviceError("not enough memory for a batch at 192x256 (test)")
            return super().make_slot(index, batch, chw)

    with DynamicBatcher(NoMemoryFor192(u2netp, device="cpu"), batch_size=2, flush_ms=1) as batcher:
        with pytest.raises(DeviceError, match="not enough memory"):
            batcher.submit(photo_inputs[-1], flush=True).result(timeout=60)
        out, _ = batcher.submit(photo_inputs[0], flush=True).result(timeout=60)
    assert out.shape == (1, 320, 320)
