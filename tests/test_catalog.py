"""The catalog pipeline on a catalog of a few hundred images with planted bad files and duplicates.

The images are drawn here (products: dark shapes on light studio backgrounds, JPEG and PNG, six
SKU folders); the model is a tiny ONNX graph built here (dark pixels are foreground), so that the
run's mechanics (validation, cache, manifest, resume after kill -9, Ray) are tested in seconds.
u2netp itself goes through the same Runner in test_catalog_u2netp_on_real_photos.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cvmatte import Matter
from cvmatte.engine import quality
from cvmatte.engine.catalog.store import Manifest
from cvmatte.engine.spec import ModelSpec, sha256_file
from cvmatte.engine.outputs import OutputSpec, backdrop, contact_shadow, on_background

N_GOOD = 240
N_DUPLICATES = 6


def build_tiny_model(folder: Path) -> Path:
    """alpha = sigmoid(-30 * (mean(RGB / 255) - 0.3)): dark pixels are foreground."""
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [-10.0] * 3)
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [9.0])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["alpha"])],
        "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("alpha", TensorProto.FLOAT, ["N", 1, "H", "W"])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.onnx"
    onnx.save(model, str(path))
    ModelSpec(name="tiny", input_size=(64, 64), input_name="image", output_name="alpha", dynamic_hw=True,
              mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), sha256=sha256_file(path),
              source="built by tests/test_catalog.py").save(folder / "tiny.json")
    return path


def product_shot(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), rng.integers(215, 250), np.uint8)
    img = (img.astype(np.int16) + rng.integers(-6, 7, (h, w, 3))).clip(0, 255).astype(np.uint8)
    color = tuple(int(c) for c in rng.integers(0, 40, 3))
    center = (int(w * rng.uniform(0.35, 0.65)), int(h * rng.uniform(0.35, 0.65)))
    axes = (int(w * rng.uniform(0.12, 0.3)), int(h * rng.uniform(0.12, 0.3)))
    cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1, lineType=cv2.LINE_AA)
    return img


def make_catalog(root: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(7)
    folder = root / "catalog"
    good = []
    for i in range(N_GOOD):
        sku = folder / f"SKU-{i % 6}"
        sku.mkdir(parents=True, exist_ok=True)
        h, w = int(rng.integers(80, 200)), int(rng.integers(80, 200))
        path = sku / (f"item{i:03d}.jpg" if i % 3 else f"item{i:03d}.png")
        Image.fromarray(product_shot(rng, h, w)).save(path, quality=90)
        good.append(path)
    dups = []
    for k in range(N_DUPLICATES):  # the same photo filed under another SKU
        src = good[k * 7]
        dst = folder / "SKU-dup" / f"copy{k}{src.suffix}"
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dst)
        dups.append(dst)
    bad = folder / "SKU-bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(good[1].read_bytes()[:300])
    (bad / "notes.png").write_bytes(b"this is a text file, not a picture")
    Image.fromarray(product_shot(rng, 12, 12)).save(bad / "thumb.png")
    Image.new("RGB", (64, 64), "red").save(bad / "icon.png", format="ICO")
    reasons = {"empty.jpg": "empty", "truncated.jpg": "truncated|corrupt", "notes.png": "not a readable image",
               "thumb.png": "smaller than", "icon.png": "ICO is not a catalog format"}
    return folder, {"good": good, "dups": dups, "bad": reasons}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    return root, build_tiny_model(root / "model"), *make_catalog(root)


def dicts(rows):
    """Rows as the manifest holds them."""
    return [r if isinstance(r, dict) else r.to_dict() for r in rows]


def rows_by_input(rows):
    out = {}
    for r in dicts(rows):
        out.setdefault(r["input"], []).append(r)
    return out


def comparable(row, out):
    """What must agree between two runs of the same catalog (not timings, run ids or cache state)."""
    return (row["status"], row["sku"], row["sha256"], bool(row["duplicate_of"]), tuple(row["flags"]), row["error"],
            tuple(sorted((k, str(Path(v).relative_to(out))) for k, v in row["outputs"].items())))


def test_catalog_run_then_rerun_does_no_model_work(world):
    root, model, folder, planted = world
    out = root / "out-main"
    m = Matter(model, device="cpu")
    look = dict(alpha=True, background="white", canvas=(200, 200), fill=0.8, shadow=True)
    report = m.catalog([folder], out, **look)
    by_input = rows_by_input(report.rows)
    n_inputs = N_GOOD + N_DUPLICATES + len(planted["bad"])
    assert len(report.rows) == n_inputs and all(len(v) == 1 for v in by_input.values())
    for path in planted["good"] + planted["dups"]:
        (row,) = by_input[str(path)]
        assert row["status"] in ("ok", "review"), row
        rgba = cv2.imread(row["outputs"]["rgba"], cv2.IMREAD_UNCHANGED)
        h, w = cv2.imread(str(path)).shape[:2]
        assert rgba.shape == (h, w, 4)
        assert Path(row["outputs"]["rgba"]).parent.name == path.parent.name  # OUT/<SKU>/
        assert cv2.imread(row["outputs"]["background"]).shape == (200, 200, 3)
        fg = rgba[..., 3] > 127
        assert 0.02 < fg.mean() < 0.6  # the dark product, not the backdrop
    for name, reason in planted["bad"].items():
        (row,) = by_input[str(folder / "SKU-bad" / name)]
        assert row["status"] in ("rejected", "failed") and name in row["error"]
        assert any(r in row["error"] for r in reason.split("|")), row["error"]
        assert not row["outputs"]
    s = report.summary
    assert s["duplicates"] == N_DUPLICATES
    assert s["model_runs"] == N_GOOD and s["cache_hits"] == N_DUPLICATES  # copies come from the cache
    assert len(s["failures"]) == len(planted["bad"])
    assert json.loads((out / "summary.json").read_text())["run"] == report.run_id
    assert not list(out.rglob("*.part"))

    again = m.catalog([folder], out, **look)
    assert again.summary["model_runs"] == 0 and again.summary["cache_hits"] == N_GOOD + N_DUPLICATES
    assert again.run_id != report.run_id
    first = {r["input"]: comparable(r, out) for r in dicts(report.rows)}
    assert {r["input"]: comparable(r, out) for r in dicts(again.rows)} == first

    other = Matter(model, device="cpu", despill=0.5).catalog([folder / "SKU-0"], out)  # another setting
    assert other.summary["model_runs"] == N_GOOD // 6 and other.summary["cache_hits"] == 0


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "cvmatte.cli", "catalog", "run", *map(str, args), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def signal_after_rows(proc: subprocess.Popen, manifest: Path, rows: int, sig: int) -> None:
    """Send `sig` to a running catalog run once its manifest holds `rows` lines (within 2 minutes)."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.is_file() and manifest.read_bytes().count(b"\n") >= rows:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before the signal: " + proc.stdout.read()
    proc.send_signal(sig)


def test_kill_minus_9_then_resume_loses_and_doubles_nothing(world):
    root, model, folder, planted = world
    out = root / "out-kill"
    proc = _cli(folder, "-o", out, "--model", model, "--alpha")
    manifest = out / "manifest.jsonl"
    signal_after_rows(proc, manifest, 60, signal.SIGKILL)
    proc.wait()
    killed_rows = Manifest(manifest).rows()
    assert 60 <= len(killed_rows) < N_GOOD
    done = _cli(folder, "-o", out, "--model", model, "--alpha", "--resume")
    log = done.communicate(timeout=300)[0]
    assert done.returncode == 1, log  # 1: the planted bad files
    rows = Manifest(manifest).rows()
    run = killed_rows[0]["run"]
    assert {r["run"] for r in rows} == {run}
    by_input = rows_by_input(rows)
    assert len(by_input) == N_GOOD + N_DUPLICATES + len(planted["bad"])
    bad = {str(folder / "SKU-bad" / name) for name in planted["bad"]}
    assert all(len(v) == 1 for i, v in by_input.items() if i not in bad), "a finished input has two rows"
    # --resume tries failed inputs again (--retry-failed is on): a second row each, still failed.
    assert all(len(by_input[i]) == 2 and by_input[i][-1]["status"] in ("rejected", "failed") for i in bad)
    for path in planted["good"]:
        (row,) = by_input[str(path)]
        assert row["status"] in ("ok", "review")
        for p in row["outputs"].values():
            assert cv2.imread(p, cv2.IMREAD_UNCHANGED) is not None
    assert not list(out.rglob("*.part"))
    resumed = {r["input"] for r in rows} - {r["input"] for r in killed_rows}
    assert resumed and all(by_input[i][0]["run"] == run for i in resumed)


def test_two_runs_into_one_folder_do_not_corrupt_each_other(world):
    root, model, folder, planted = world
    out = root / "out-shared"
    procs = [_cli(folder / "SKU-1", folder / "SKU-2", "-o", out, "--model", model) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stdout.read()
    raw = (out / "manifest.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in raw]  # every line whole
    assert len({r["run"] for r in rows}) == 2
    by_input = rows_by_input(rows)
    assert len(by_input) == 2 * N_GOOD // 6 and all(len(v) == 2 for v in by_input.values())
    for v in by_input.values():
        assert v[0]["outputs"] == v[1]["outputs"]
        assert cv2.imread(v[0]["outputs"]["rgba"], cv2.IMREAD_UNCHANGED).shape[2] == 4


def test_the_same_catalog_through_ray_gives_the_same_manifest(world):
    pytest.importorskip("ray")
    root, model, folder, planted = world
    local_out, ray_out = root / "out-local", root / "out-ray"
    m = Matter(model, device="cpu")
    local = m.catalog([folder], local_out)
    on_ray = m.catalog([folder], ray_out, ray=True, ray_actors=2)
    import ray

    ray.shutdown()
    assert on_ray.summary["model_runs"] == N_GOOD
    assert {r["input"]: comparable(r, ray_out) for r in dicts(on_ray.rows)} == \
        {r["input"]: comparable(r, local_out) for r in dicts(local.rows)}


def test_watch_takes_files_as_they_arrive_once_each(world, tmp_path):
    root, model, folder, planted = world
    inbox, out = tmp_path / "inbox" / "SKU-w", tmp_path / "out"
    inbox.mkdir(parents=True)
    m = Matter(model, device="cpu")
    rows = []
    t = threading.Thread(target=lambda: rows.extend(m.watch(inbox.parent, out, settle_s=0.2, idle_exit_s=2.0)))
    t.start()
    for i, src in enumerate(planted["good"][:12]):
        shutil.copyfile(src, inbox / f"w{i}{src.suffix}")
        time.sleep(0.1)
    t.join(timeout=60)
    assert not t.is_alive()
    assert sorted(Path(r.input).name for r in rows) == sorted(f"w{i}{s.suffix}" for i, s in enumerate(planted["good"][:12]))
    assert all(r.ok for r in rows)
    assert len({r["run"] for r in Manifest(out / "manifest.jsonl").rows()}) == 1


def test_catalog_u2netp_on_real_photos(tmp_path):
    from cvmatte.samples import write_demo_photos

    write_demo_photos(tmp_path / "in" / "SKU-demo")
    report = Matter("u2netp", device="cpu").catalog([tmp_path / "in"], tmp_path / "out")
    by_name = {Path(r["input"]).name: r for r in dicts(report.rows)}
    assert report.summary["model_runs"] == 5
    assert by_name["coffee.jpg"]["status"] == "ok" and by_name["coffee.jpg"]["quality"]["foreground"] > 0.3
    # The astronaut's portrait is cut by the frame's bottom edge; u2netp's motorcycle is a half-
    # transparent ghost over the garage (looked at): both are sent to review, with the reason.
    assert any("bottom" in f for f in by_name["astronaut.png"]["flags"])
    assert any("semi-transparent" in f for f in by_name["motorcycle.jpg"]["flags"])
    assert {r["input"] for r in report.summary["review"]} >= {str(tmp_path / "in" / "SKU-demo" / n)
                                                              for n in ("astronaut.png", "motorcycle.jpg")}


# --- quality flags and backgrounds on constructed alphas -------------------------------------------

def disc(h, w, cy, cx, r, soft=1.0):
    yy, xx = np.mgrid[:h, :w]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip((r - d) / soft + 0.5, 0, 1).astype(np.float32)


def test_quality_flags_say_what_is_wrong():
    t = quality.QualityThresholds()
    clean = disc(400, 400, 200, 200, 100)
    assert quality.flags(quality.measure(clean, clean), t) == []
    assert any("no foreground" in f for f in quality.flags(quality.measure(np.zeros((100, 100), np.float32)), t))
    cropped = disc(400, 400, 380, 200, 150)
    assert any("bottom" in f for f in quality.flags(quality.measure(cropped), t))
    pieces = np.maximum.reduce([disc(400, 400, 100, 100, 40), disc(400, 400, 300, 300, 40), disc(400, 400, 100, 300, 40)])
    assert any("3 separate pieces" in f for f in quality.flags(quality.measure(pieces), t))
    blurred = disc(400, 400, 200, 200, 100, soft=25.0)
    assert any("soft edge" in f or "semi-transparent" in f for f in quality.flags(quality.measure(blurred), t))
    moved = disc(400, 400, 200, 260, 100)
    assert any("IoU" in f for f in quality.flags(quality.measure(moved, clean), t))
    with pytest.raises(ValueError, match="unknown quality thresholds"):
        quality.QualityThresholds.from_dict({"max_pieces": 2})


def test_background_fills_centres_and_grounds_the_product():
    alpha = disc(300, 500, 120, 300, 60)
    fg = np.zeros((300, 500, 3), np.uint8)
    out = on_background(fg, alpha, OutputSpec(background="white", canvas=(800, 600), fill=0.5))
    ys, xs = np.nonzero(out.mean(axis=2) < 128)
    assert abs((ys.max() - ys.min() + 1) - 300) <= 3  # fills half of the tighter side (600)
    assert abs((ys.min() + ys.max()) / 2 - 300) <= 2 and abs((xs.min() + xs.max()) / 2 - 400) <= 2
    assert (out[0, 0] == 255).all()
    shaded = on_background(fg, alpha, OutputSpec(background="white", canvas=(800, 600), fill=0.5, shadow=True))
    below = shaded[ys.max() + 4, 400].astype(int)
    assert below.max() < 235 and (shaded[ys.min() - 10, 400] == 255).all()  # under it, not above
    grad = backdrop("gradient:#ffffff,#000000", (64, 64))
    assert grad[0, 0, 0] == 255 and grad[-1, 0, 0] == 0 and grad[32, 10, 0] == grad[32, 50, 0]
    assert (backdrop("#102030", (20, 20))[5, 5] == (16, 32, 48)).all()
    assert (backdrop("#fff", (4, 4)) == 255).all() and (backdrop("rgb(1,2,3)", (4, 4))[0, 0] == (1, 2, 3)).all()
    assert (backdrop("ivory", (4, 4))[0, 0] == (255, 255, 240)).all()
    with pytest.raises(ValueError, match="colour"):
        OutputSpec(background="#12345")
    # Without a canvas the photo keeps its size and the product its place.
    kept = on_background(fg, alpha, OutputSpec(background="#102030"))
    assert kept.shape == (300, 500, 3) and (kept[120, 300] == 0).all() and (kept[0, 0] == (16, 32, 48)).all()
    assert contact_shadow(np.zeros((50, 50), np.float32), 0.5).max() == 0
