"""Folders in, standardised files out: the API's matte_files and the `cvmatte` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvmatte.samples import write_demo_photos
from cvmatte.engine import imageio
from cvmatte.engine.outputs import OutputSpec, SkuResolver, on_background


@pytest.fixture()
def catalog(tmp_path):
    """Real photos in two SKU folders, plus the bad files catalogs really contain."""
    good = write_demo_photos(tmp_path / "in" / "SKU-1")
    (tmp_path / "in" / "SKU-2").mkdir()
    coffee = good[0].read_bytes()
    (tmp_path / "in" / "SKU-2" / "coffee.jpg").write_bytes(coffee)  # same stem as SKU-1's, other SKU
    (tmp_path / "in" / "SKU-2" / "coffee.png").write_bytes(imageio.encode_png(cv2.imread(str(good[0]))[..., ::-1]))
    (tmp_path / "in" / "SKU-2" / "empty.jpg").write_bytes(b"")
    (tmp_path / "in" / "SKU-2" / "truncated.jpg").write_bytes(coffee[: len(coffee) // 3])
    (tmp_path / "in" / "SKU-2" / "readme.png").write_bytes(b"not an image at all")
    return tmp_path / "in", len(good) + 2, 3


def read_rgba(path):
    im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert im is not None and im.ndim == 3 and im.shape[2] == 4, path
    return im


def test_matte_files_writes_every_good_image_and_reports_every_bad_one(matter, catalog, tmp_path):
    folder, n_good, n_bad = catalog
    out = tmp_path / "out"
    report = matter.matte_files([folder], out, alpha=True, background="white", canvas=(400, 400))
    assert len(report.succeeded) == n_good and len(report.failed) == n_bad
    for r in report.failed:
        assert Path(r.input).name in r.error
    reasons = {Path(r.input).name: r.error for r in report.failed}
    assert "empty" in reasons["empty.jpg"]
    assert "truncated" in reasons["truncated.jpg"] or "corrupt" in reasons["truncated.jpg"]
    assert "not a readable image" in reasons["readme.png"]
    rgba_paths = [Path(r.outputs["rgba"]) for r in report.succeeded]
    assert len(set(rgba_paths)) == n_good  # coffee.jpg and coffee.png never overwrite each other
    for r in report.succeeded:
        rgba = read_rgba(r.outputs["rgba"])
        assert rgba.shape[:2] == (r.height, r.width)  # original resolution
        p = Path(r.outputs["rgba"])
        assert p.name.endswith("_matte.png") and p.parent.name.endswith("_" + r.sku)
        assert p.parent.parent.name.isdigit() and len(p.parent.parent.name) == 8  # YYYYMMDD
        assert cv2.imread(r.outputs["background"]).shape == (400, 400, 3)
        assert cv2.imread(r.outputs["alpha"], cv2.IMREAD_UNCHANGED).ndim == 2
    sku2 = sorted(p.name for p in rgba_paths if p.parent.name.endswith("_SKU-2"))
    assert sku2 == ["coffee_matte.png", "coffee_png_matte.png"]  # the one name planner
    assert not list(out.rglob("*.part"))
    rows = [json.loads(line) for line in report.manifest.read_text().splitlines()]
    assert len(rows) == n_good + n_bad
    assert {row["input"] for row in rows} == {r.input for r in report.rows}
    assert all(len(row["sha256"]) == 64 for row in rows if "empty" not in row["input"])


def test_cut_out_on_white_has_no_background_fringe():
    """On a real-texture composite with exact alpha, the despilled foreground laid on white is
    close to the ideal cut-out where the edge is soft; the raw photo's colours carry a fringe."""
    from cvmatte.samples import make_composite
    from cvmatte.engine.refine import estimate_foreground

    c = make_composite(megapixels=1.0, seed=3, bg_photo="astronaut.png")
    a = c.alpha[..., None]
    soft = (c.alpha > 0.05) & (c.alpha < 0.95)
    ideal = c.foreground.astype(np.float32) * a + 255 * (1 - a)

    def on_white(fg):
        return fg.astype(np.float32) * a + 255 * (1 - a)

    raw_err = np.abs(on_white(c.rgb) - ideal)[soft].mean()
    despilled_err = np.abs(on_white(estimate_foreground(c.rgb, c.alpha, 1.0)) - ideal)[soft].mean()
    half_err = np.abs(on_white(estimate_foreground(c.rgb, c.alpha, 0.5)) - ideal)[soft].mean()
    assert soft.sum() > 1000
    assert despilled_err < 0.3 * raw_err, (despilled_err, raw_err)
    assert despilled_err < half_err < raw_err  # the strength setting moves between the two


def test_atomic_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "a" / "x_matte.png"
    imageio.atomic_write_bytes(target, b"old complete file")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        imageio.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old complete file"
    assert [p.name for p in target.parent.iterdir()] == ["x_matte.png"]


def test_sku_from_csv_then_regex_then_folder(tmp_path):
    csv_path = tmp_path / "skus.csv"
    csv_path.write_text("file,sku\nshoe.jpg,SHOE-42\n")
    resolve = SkuResolver(regex=r"^(?P<sku>[A-Z]+-\d+)_", csv_path=csv_path)
    assert resolve(Path("x/shoe.jpg")) == "SHOE-42"
    assert resolve(Path("x/BAG-7_front.jpg")) == "BAG-7"
    assert resolve(Path("summer/hat.jpg")) == "summer"
    assert SkuResolver()(Path("a/../../etc/passwd")) != ".."  # names never climb out


def test_canvas_centres_the_product_at_its_fill():
    fg = np.zeros((100, 200, 3), np.uint8)
    fg[...] = (10, 200, 10)
    alpha = np.zeros((100, 200), np.float32)
    alpha[20:60, 50:150] = 1.0  # a 100 x 40 product
    out = on_background(fg, alpha, OutputSpec(background="white", canvas=(300, 300), fill=0.8))
    assert out.shape == (300, 300, 3)
    green = out[..., 1] > 150
    ys, xs = np.nonzero(green & (out[..., 0] < 50))
    assert xs.min() == pytest.approx(30, abs=1) and xs.max() == pytest.approx(269, abs=1)  # 240 px wide
    assert (ys.min() + ys.max()) / 2 == pytest.approx(149.5, abs=1)
    assert (out[0, 0] == 255).all()


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cvmatte", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_cli_mattes_a_folder_and_exit_code_says_some_failed(catalog, tmp_path):
    folder, n_good, n_bad = catalog
    proc = run_cli("matte", str(folder), "-o", str(tmp_path / "cli-out"), "--device", "cpu", "-q")
    assert proc.returncode == 1, proc.stderr
    assert f"{n_good} ok, {n_bad} failed" in proc.stderr
    assert "empty.jpg" in proc.stderr and " on CPU " in proc.stderr.splitlines()[0]
    assert len(list((tmp_path / "cli-out").rglob("*_matte.png"))) == n_good


def test_cli_all_good_exits_zero_and_globs_work(tmp_path):
    write_demo_photos(tmp_path / "in")
    proc = run_cli("matte", str(tmp_path / "in" / "*.jpg"), "-o", str(tmp_path / "o"), "--no-tile", "-q")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "o").rglob("*_matte.png"))) == 3


def test_cli_device_cuda_without_a_gpu_is_a_diagnosed_error(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("the CUDA provider is installed here")
    write_demo_photos(tmp_path / "in")
    proc = run_cli("matte", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--device", "cuda")
    assert proc.returncode == 2
    assert "CUDAExecutionProvider" in proc.stderr and "pip" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_cli_models_lists_the_zoo():
    proc = run_cli("models")
    assert proc.returncode == 0, proc.stderr
    assert "u2netp" in proc.stdout and "cv-unet-universal" in proc.stdout


def test_cli_missing_input_is_a_clear_error(tmp_path):
    proc = run_cli("matte", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "nope.jpg" in proc.stderr


def test_the_same_photo_gives_the_same_bytes_through_every_front_door(tmp_path):
    """`cvmatte matte`, the API's matte_files and matte, a catalog run and its cached re-run, and
    the service: one per-image path, so byte-identical outputs of every kind."""
    from cvmatte import Matter
    from cvmatte.engine.outputs import KINDS
    from cvmatte.server import Service, Settings

    photos = [p for p in write_demo_photos(tmp_path / "in") if p.stem in ("coffee", "chelsea")]
    opts = dict(alpha=True, background="#f4f4f4", canvas=(300, 300), fill=0.7, shadow=True)
    proc = run_cli("matte", *map(str, photos), "-o", str(tmp_path / "cli"), "-m", "u2netp", "--device", "cpu",
                   "--alpha", "--background", "#f4f4f4", "--canvas", "300x300", "--fill", "0.7", "--shadow", "-q")
    assert proc.returncode == 0, proc.stderr

    def read(report):
        return {(Path(r.input).stem, kind): Path(p).read_bytes() for r in report.rows for kind, p in r.outputs.items()}

    with Matter("u2netp", device="cpu") as m:
        direct = m.matte(photos[0])
        doors = {"api": read(m.matte_files(photos, tmp_path / "api", **opts)),
                 "catalog": read(m.catalog(photos, tmp_path / "cat", **opts))}
        rerun = m.catalog(photos, tmp_path / "cat", **opts)
        assert rerun.summary["cache_hits"] == 2 and rerun.summary["model_runs"] == 0
        doors["catalog re-run"] = read(rerun)
    doors["cli"] = {(p.name.rsplit("_", 1)[0], kind): p.read_bytes()
                    for kind, k in KINDS.items() for p in (tmp_path / "cli").rglob(f"*{k.suffix}")}
    service = Service("u2netp", device="cpu", refiners=("guided",))
    try:
        def spec(kind):  # one kind a request, as the HTTP layer asks
            return OutputSpec(rgba=kind == "rgba", alpha=kind == "alpha",
                              background=opts["background"] if kind == "background" else None,
                              canvas=opts["canvas"], fill=opts["fill"], shadow=opts["shadow"])

        doors["service"] = {(p.stem, kind): service.matte_bytes(p.read_bytes(), p.name,
                                                                Settings(output=kind, spec=spec(kind)))[0]
                            for p in photos for kind in KINDS}
    finally:
        service.close()
    reference = doors.pop("api")
    assert len(reference) == 2 * len(KINDS)
    for door, outputs in doors.items():
        assert outputs.keys() == reference.keys(), door
        different = [key for key in reference if outputs[key] != reference[key]]
        assert not different, f"{door} differs from the API on {different}"
    # The in-memory result is the PNG's pixels.
    png = cv2.imread(str(next(tmp_path.glob("api/*/*/coffee_matte.png"))), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(png[..., [2, 1, 0, 3]], direct.rgba)
