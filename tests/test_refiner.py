"""The training corpus (composites with exact alpha) and the learned tile refiner in the engine."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (the export extra)")

from cvmatte import Matter  # noqa: E402
from cvmatte.samples import load_photo, make_composite, write_demo_photos  # noqa: E402
from cvmatte.distill import data  # noqa: E402
from cvmatte.distill.corpus import build_corpus, compose, photographic_cutouts  # noqa: E402
from cvmatte.engine.nets.cvunet import build  # noqa: E402
from cvmatte.distill.refiner import RefinerConfig, train_refiner  # noqa: E402
from cvmatte.engine.errors import ModelError  # noqa: E402
from cvmatte.engine.spec import ModelSpec  # noqa: E402
from cvmatte.export.torch_export import export_module  # noqa: E402


def _cutout(photo: str, flat: bool) -> np.ndarray:
    """An RGBA disc cut from a real photo, or (flat) a single-colour disc like clip art."""
    rgb = cv2.resize(load_photo(photo), (240, 240))
    if flat:
        rgb[:] = (200, 30, 30)
    a = np.zeros((240, 240), np.uint8)
    cv2.circle(a, (120, 120), 100, 255, -1, cv2.LINE_AA)
    return np.dstack([rgb, a])


@pytest.fixture(scope="module")
def cutouts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cutouts")
    for name, photo, flat in (("cat", "chelsea.png", False), ("cup", "coffee.png", False), ("logo", "coffee.png", True)):
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(_cutout(photo, flat), cv2.COLOR_RGBA2BGRA))
    return folder


def test_clip_art_is_told_from_photographic_cutouts(cutouts):
    assert sorted(p.stem for p in photographic_cutouts([cutouts])) == ["cat", "cup"]


def test_a_composite_is_exactly_its_layers():
    rng = np.random.default_rng(0)
    cut = _cutout("chelsea.png", False)
    background = load_photo("rocket.jpg")
    for _ in range(6):  # all three backdrops come up
        rgb, alpha = compose(cut, background, rng)
        assert 480 <= max(rgb.shape[:2]) <= 800 and rgb.shape[:2] == alpha.shape
        assert alpha.max() == 1.0 and alpha.min() == 0.0
        inside = alpha == 1.0
        assert 0.05 < inside.mean() < 0.8  # the product fills a fair share of the frame
    big, big_alpha = compose(cut, background, rng, side=2400)
    assert max(big.shape[:2]) == 2400


def test_corpus_pairs_are_read_as_ground_truth(tmp_path, cutouts, matter):
    photos = tmp_path / "photos_in"
    write_demo_photos(photos)
    summary = build_corpus([cutouts], [photos], [photos], 4, tmp_path / "corpus")
    assert summary == {"composites": 4, "cutouts": 2, "backgrounds": 5, "photos": 5}
    listed = data.list_photos([tmp_path / "corpus"])
    assert len(listed) == 9 and not any(p.name.endswith(data.ALPHA_SUFFIX) for p in listed)
    samples = data.teacher_labels(matter, listed, tmp_path / "labels", log=lambda *_: None)
    exact = [s for s in samples if s.exact]
    assert len(exact) == 4
    for s in exact:
        truth = cv2.imread(str(data.alpha_file(s.source)), cv2.IMREAD_GRAYSCALE) / 255.0
        assert np.abs(s.alpha - truth).max() < 1e-6
    # Only the real photos went to the teacher.
    assert len(list((tmp_path / "labels").glob("*.png"))) == 5


def test_a_refiner_starts_as_the_identity_of_the_coarse_alpha():
    model = build("cvunet-xs", in_channels=4).eval()
    x = torch.randn(2, 4, 64, 96)
    x[:, 3] = torch.rand(2, 64, 96)
    with torch.no_grad():
        y = model(x)
    assert torch.allclose(y[:, 0], x[:, 3].clamp(1e-3, 1 - 1e-3), atol=1e-5)


def _export_refiner(path, spec_like: ModelSpec, trained=None):
    model = trained or build("cvunet-xs", in_channels=4).eval()
    spec = ModelSpec(name="tiny-refiner", input_size=(256, 256), input_name="image", output_name="alpha",
                     mean=spec_like.mean, std=spec_like.std, in_channels=4, dynamic_batch=True, dynamic_hw=True)
    return export_module(model, spec, path)


def test_the_engine_runs_a_learned_refiner_on_the_band_only(tmp_path, matter):
    _export_refiner(tmp_path / "r.onnx", matter.spec)
    c = make_composite(4.0, seed=5)  # scale 7: above ModelRefiner.MIN_SCALE
    learned = Matter("u2netp", device="cpu", despill=0.0, refiner=tmp_path / "r.onnx")
    assert "tiles refined by tiny-refiner" in learned.describe()
    r = learned.matte(c.rgb)
    assert r.tiles > 0
    # An untrained network returns the coarse alpha, so the result is its guided pass alone on
    # the coarse alpha inside the band, and the coarse alpha (on the 8-bit grid) outside it.
    assert np.abs(r.alpha - r.coarse)[~r.band].max() <= 0.5 / 255 + 1e-6
    smooth_only = Matter("u2netp", device="cpu", despill=0.0, refiner=learned.engine.refiner.smooth,
                         tile_size=learned.engine.refiner.tile_size).matte(c.rgb)  # the same tiles
    assert np.abs(r.alpha - smooth_only.alpha).max() <= 2 / 255
    assert (np.abs(r.alpha - r.coarse)[r.band] > 2 / 255).any()  # the pass did change the band
    with pytest.raises(ModelError, match="not a tile refiner"):
        Matter("u2netp", device="cpu", refiner="u2netp")
    with pytest.raises(ModelError, match="refiner="):
        Matter(tmp_path / "r.onnx", device="cpu")


def test_refiner_training_on_high_res_shots_beats_the_coarse_alpha(tmp_path):
    cfg = RefinerConfig(out=str(tmp_path / "run"), shots=5, tiles_per_shot=12, tile=192, crop=160, steps=60,
                        eval_every=20, batch_size=4, lr=3e-3)
    result = train_refiner(cfg, log=lambda *_: None)
    tiles = np.load(tmp_path / "run" / "tiles.npz")
    assert tiles["rgb"].shape[1:] == (192, 192, 3) and len(np.unique(tiles["shot"])) == 5
    best = result["best"]
    assert best["sad"] < best["coarse_sad"]
    m = Matter("u2netp", device="cpu", refiner=result["onnx"])
    assert m.matte(make_composite(1.0, seed=1).rgb).alpha.shape == (866, 1155)


def test_small_photos_go_to_the_guided_filter(matter):
    """Below ModelRefiner.MIN_SCALE (2: the smallest scale measured), the tiles take the fallback."""
    learned = Matter("u2netp", device="cpu", despill=0.0, refiner="cvunet-refiner")
    guided = Matter("u2netp", device="cpu", despill=0.0)
    cat = load_photo("chelsea.png")  # 451x300: scale 1.4
    assert np.array_equal(learned.matte(cat).alpha, guided.matte(cat).alpha)


def test_the_learned_refiner_changes_the_band_from_its_min_scale_on(tmp_path):
    """--refiner cvunet-refiner does what it says: from ModelRefiner.MIN_SCALE on, the learned
    refiner's tiles change the alpha inside the band and nowhere else; below it, the guided filter
    refines and the result is the default's, byte for byte. Through the CLI, as users run it."""
    import subprocess
    import sys

    from cvmatte.engine.refiners import ModelRefiner

    side = {"above": int(ModelRefiner.MIN_SCALE * 320) + 96, "below": int(ModelRefiner.MIN_SCALE * 320) - 96}
    for where, longer in side.items():
        c = make_composite(longer * longer * 0.75 / 1e6, seed=5, fg_photo="chelsea.png", bg_photo="rocket.jpg")
        assert abs(max(c.rgb.shape) - longer) <= 2
        photo = tmp_path / f"{where}.png"
        cv2.imwrite(str(photo), cv2.cvtColor(c.rgb, cv2.COLOR_RGB2BGR))
        alphas = {}
        for refiner in ("guided", "cvunet-refiner"):
            out = tmp_path / f"{where}-{refiner}.png"
            p = subprocess.run([sys.executable, "-m", "cvmatte.cli", "matte", str(photo), "-o", str(out), "--only-alpha",
                                "--refiner", refiner], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
            alphas[refiner] = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
        changed = alphas["guided"] != alphas["cvunet-refiner"]
        if where == "below":
            assert not changed.any()
            continue
        band = Matter(device="cpu").matte(c.rgb).band
        assert changed[band].mean() > 0.05  # the tiles refined most of the band differently
        assert not changed[~band].any()  # outside the band both keep the coarse alpha


def test_soft_mattes_split_atlases_into_objects_and_hold_out_whole_files(tmp_path):
    """distill/soft_mattes.py on textures laid out as the package's are: each atlas's soft objects
    become cut-outs (a repeated copy once, a hard-edged one and a speck not at all), and every
    third texture goes whole to the held-out split, so no object is on both sides."""
    from cvmatte.distill import soft_mattes

    folder = tmp_path / "usr/share/games/flightgear/Textures/Trees"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def soft_blob(size, radius):
        a = np.zeros((size, size), np.float32)
        cv2.circle(a, (size // 2, size // 2), radius, 1.0, -1)
        a = cv2.GaussianBlur(a, (0, 0), size / 12)  # a cloud-like soft rim
        rgb = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        return np.dstack([rgb, np.round(a * 255).astype(np.uint8)])

    blob = soft_blob(200, 50)
    for k in range(4):  # four textures: t0 and t3 are held out (k % 3 == 0)
        atlas = np.zeros((512, 1024, 4), np.uint8)
        atlas[20:220, 20:220] = soft_blob(200, 60 + 5 * k)
        atlas[20:220, 300:500] = blob  # the same object in every atlas: kept once
        hard = np.zeros((200, 200), np.uint8)
        cv2.rectangle(hard, (20, 20), (180, 180), 255, -1)  # no soft edge: not wanted
        atlas[260:460, 20:220, 3] = hard
        atlas[300:310, 600:610, 3] = 128  # a speck
        cv2.imwrite(str(folder / f"t{k}.png"), cv2.cvtColor(atlas, cv2.COLOR_RGBA2BGRA))
    summary = soft_mattes.build(tmp_path, tmp_path / "out", log=lambda *_: None)
    by_split = {s: [o for o in summary["objects"] if o["split"] == s] for s in ("train", "heldout")}
    assert {o["source"].split("/")[-1] for o in by_split["heldout"]} == {"t0.png", "t3.png"}
    assert len(by_split["heldout"]) == 3 and len(by_split["train"]) == 2  # the shared blob once, in t0
    for o in summary["objects"]:
        cut = cv2.imread(str(tmp_path / "out" / o["file"]), cv2.IMREAD_UNCHANGED)
        assert 160 <= max(cut.shape[:2]) <= 210 and o["soft_share"] > 0.2
    assert soft_mattes.read_split(tmp_path / "out", "heldout") == sorted((tmp_path / "out/heldout").glob("*.png"))
