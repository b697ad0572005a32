"""The learned tile refiner: a small CV-UNet that takes a full-resolution tile's RGB plus the
engine's upsampled coarse alpha (4 channels) and returns the refined alpha.

Training data are high-resolution product shots with exact alpha: the procedural bottles with
hair-thin strands of cvmatte/samples.py; when soft-matte folders are given, photographed trees,
shrubs, grasses and clouds with their real soft alpha (distill/soft_mattes.py, its training split
only); and, when cut-out folders are given, photographic cut-outs with hard outlines. Cut-outs go
over studio or scene backdrops (distill/corpus.py) at a longer side drawn from min_side..max_side,
so the tiles span the upsampling scales the refiner will meet.
Each shot goes through the engine's own coarse pass and band finder, so the tiles are exactly
where and what the refiner sees at run time: crops centred on the uncertain band, with the
coarse alpha as the engine upsamples it.

    python -m cvmatte.distill.refiner -o runs/refiner --soft-mattes soft-mattes/train \
        --cutouts corpus-src/stamps --backgrounds corpus/photos --shots 72 --min-side 1000 --minutes 20
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cvmatte.samples import SCENES, make_composite
from cvmatte.engine import metrics, preprocess
from cvmatte.engine.spec import ModelSpec

from . import losses
from cvmatte.engine.nets.checkpoint import load_checkpoint, save_checkpoint
from .corpus import HELD_OUT_EVERY, compose, in_split, load_backgrounds, photographic_cutouts, read_cutout
from cvmatte.engine.nets.cvunet import build, count_flops
from .trainer import budget_fraction, scheduled_lr

#: Seeds of the procedural shots start here, far from the benchmarks' (0..99) and the
#: student benchmark's (100+), so that no evaluation image is ever trained on.
SEED_BASE = 10_000


@dataclass
class RefinerConfig:
    out: str = "runs/refiner"
    name: str = "cvunet-refiner"
    preset: str = "cvunet-xs"
    #: The coarse model whose alpha the refiner learns to refine: the packaged default.
    teacher: str = "u2netp-product"
    soft_mattes: list[str] = field(default_factory=list)
    cutouts: list[str] = field(default_factory=list)
    backgrounds: list[str] = field(default_factory=list)
    shots: int = 40
    min_side: int = 2000
    max_side: int = 4000
    tiles_per_shot: int = 24
    tile: int = 320
    crop: int = 256
    batch_size: int = 8
    lr: float = 2e-3
    steps: int | None = None
    minutes: float | None = None
    eval_every: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.steps is None and self.minutes is None:
            raise ValueError("give steps or minutes")
        if self.crop > self.tile or self.crop % 32:
            raise ValueError(f"crop must be a multiple of 32 and at most the tile size; got {self.crop}")


def high_res_shots(cfg: RefinerConfig, rng: np.random.Generator):
    """Yields (rgb uint8 [H, W, 3], exact alpha float32 [H, W]): procedural shots and, in turn,
    soft mattes and hard cut-outs where folders of them are given."""
    backgrounds = load_backgrounds([Path(p) for p in cfg.backgrounds]) if cfg.backgrounds else []
    kinds = [("procedural", [])]
    if backgrounds:
        for kind, folders in (("soft", cfg.soft_mattes), ("cutout", cfg.cutouts)):
            if folders:
                if kind == "cutout":  # the corpus's split: its held-out cut-outs stay out (in_split)
                    found = photographic_cutouts([Path(p) for p in folders])
                    files = [p for i, p in enumerate(found) if in_split(i, "train", HELD_OUT_EVERY)]
                else:  # soft_mattes.py has split them already: pass its train/ folder
                    files = sorted(p for f in folders for p in Path(f).glob("*.png"))
                kinds.append((kind, files))
    for i in range(cfg.shots):
        kind, files = kinds[i % len(kinds)]
        if kind != "procedural":
            cut = read_cutout(files[int(rng.integers(len(files)))])
            yield compose(cut, backgrounds[int(rng.integers(len(backgrounds)))], rng,
                          side=int(rng.integers(cfg.min_side, cfg.max_side + 1)))
        else:
            fg, bg = SCENES[i % len(SCENES)]
            side = int(rng.integers(cfg.min_side, cfg.max_side + 1))
            aspect = float(rng.choice([4 / 3, 3 / 4, 1.0]))
            c = make_composite(side * side / max(aspect, 1 / aspect) / 1e6, seed=SEED_BASE + cfg.seed * 1000 + i,
                               fg_photo=fg, bg_photo=bg, strands=int(rng.integers(20, 80)), aspect=aspect)
            yield c.rgb, c.alpha


def band_tiles(engine, rgb: np.ndarray, alpha: np.ndarray, count: int, tile: int, rng: np.random.Generator):
    """`count` tiles (tile x tile) centred on random pixels of the engine's uncertain band:
    (rgb, upsampled coarse alpha, exact alpha) each."""
    coarse_small = engine.coarse([rgb])[0]
    H, W = alpha.shape
    coarse = preprocess.upsample_alpha(coarse_small, (H, W))
    ys, xs = np.nonzero(engine.band_weight(coarse_small, (H, W)) > 0)
    out = []
    if len(ys) == 0:
        return out
    for j in rng.integers(0, len(ys), count):
        y = int(np.clip(ys[j] - tile // 2, 0, H - tile))
        x = int(np.clip(xs[j] - tile // 2, 0, W - tile))
        sl = (slice(y, y + tile), slice(x, x + tile))
        out.append((rgb[sl].copy(), coarse[sl].copy(), alpha[sl].copy()))
    return out


def make_tiles(cfg: RefinerConfig, engine, log=print) -> dict[str, np.ndarray]:
    """All training tiles, cached in RUN/tiles.npz (rgb uint8, coarse and alpha as uint16)."""
    cache = Path(cfg.out) / "tiles.npz"
    if cache.is_file():
        z = np.load(cache)
        log(f"{len(z['rgb'])} tiles from {cache}")
        return {k: z[k] for k in z.files}
    rng = np.random.default_rng(cfg.seed)
    rgb, coarse, alpha, shot = [], [], [], []
    t0 = time.perf_counter()
    for i, (image, truth) in enumerate(high_res_shots(cfg, rng)):
        for r, c, a in band_tiles(engine, image, truth, cfg.tiles_per_shot, cfg.tile, rng):
            rgb.append(r)
            coarse.append(np.round(c * 65535).astype(np.uint16))
            alpha.append(np.round(a * 65535).astype(np.uint16))
            shot.append(i)
    tiles = {"rgb": np.stack(rgb), "coarse": np.stack(coarse), "alpha": np.stack(alpha), "shot": np.asarray(shot)}
    np.savez(cache, **tiles)
    log(f"{len(rgb)} tiles from {cfg.shots} shots of {cfg.min_side}-{cfg.max_side} px in {time.perf_counter() - t0:.0f} s")
    return tiles


def _batch(tiles, idx, spec: ModelSpec, crop: int, rng: np.random.Generator | None):
    xs, ys = [], []
    t = tiles["rgb"].shape[1]
    for i in idx:
        y, x = (0, 0) if rng is None else rng.integers(0, t - crop + 1, 2)
        sl = (slice(y, y + crop), slice(x, x + crop))
        rgb, coarse, alpha = tiles["rgb"][i][sl], tiles["coarse"][i][sl] / 65535.0, tiles["alpha"][i][sl] / 65535.0
        if rng is not None and rng.random() < 0.5:
            rgb, coarse, alpha = rgb[:, ::-1], coarse[:, ::-1], alpha[:, ::-1]
        xs.append(np.concatenate([preprocess.normalize(np.ascontiguousarray(rgb), spec), coarse[None]], 0))
        ys.append(alpha[None])
    return torch.from_numpy(np.stack(xs).astype(np.float32)), torch.from_numpy(np.stack(ys).astype(np.float32))


def evaluate(model, tiles, idx, spec, crop) -> dict:
    """Refined and coarse alpha against the exact alpha on held-out tiles."""
    model.eval()
    rows = []
    with torch.no_grad():
        for i in idx:
            x, y = _batch(tiles, [i], spec, crop, None)
            pred, truth, coarse = model(x)[0, 0].numpy(), y[0, 0].numpy(), x[0, 3].numpy()
            rows.append((metrics.sad(pred, truth), metrics.gradient_error(pred, truth),
                         metrics.sad(coarse, truth), metrics.gradient_error(coarse, truth)))
    model.train()
    a = np.asarray(rows).mean(axis=0)
    return {"sad": float(a[0]), "grad": float(a[1]), "coarse_sad": float(a[2]), "coarse_grad": float(a[3])}


def train_refiner(cfg: RefinerConfig, log=print) -> dict:
    from cvmatte import Matter
    from cvmatte.export.torch_export import export_module

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 1])
    teacher = Matter(cfg.teacher, device="cpu")
    tiles = make_tiles(cfg, teacher.engine, log)
    # Held out by shot, not by tile: neighbouring tiles of one shot overlap.
    held_shot = tiles["shot"] % 5 == 0
    held, train = np.nonzero(held_shot)[0], np.nonzero(~held_shot)[0]
    spec = ModelSpec(name=cfg.name, input_size=(cfg.tile, cfg.tile), input_name="image", output_name="alpha",
                     mean=teacher.spec.mean, std=teacher.spec.std, in_channels=4, dynamic_batch=True, dynamic_hw=True,
                     source=f"cvmatte tile refiner, trained on the coarse alpha of {teacher.spec.name} "
                            f"(sha256 {teacher.spec.sha256[:12]})",
                     notes=f"input: normalised RGB + coarse alpha in [0, 1]; config {json.dumps(asdict(cfg))}")
    model = build(cfg.preset, in_channels=4).to(memory_format=torch.channels_last)
    log(f"refiner {cfg.preset}+alpha: {count_flops(model, (512, 512)) / 1e9:.2f} GFLOP per 512² tile; "
        f"{len(train)} training and {len(held)} held-out tiles")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    start, step, best = time.perf_counter(), 0, float("inf")

    def fraction():
        return budget_fraction(step, cfg.steps, time.perf_counter() - start, cfg.minutes)

    first = evaluate(model, tiles, held, spec, cfg.crop)
    log(f"before training (refiner = coarse alpha): {first}")
    while fraction() < 1.0:
        for g in opt.param_groups:
            g["lr"] = scheduled_lr(cfg.lr, fraction())
        x, y = _batch(tiles, rng.choice(train, cfg.batch_size), spec, cfg.crop, rng)
        pred = model(x.contiguous(memory_format=torch.channels_last))
        loss, parts = losses.matting_loss(pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % cfg.eval_every == 0 or fraction() >= 1.0:
            scores = evaluate(model, tiles, held, spec, cfg.crop)
            if scores["sad"] < best:
                best = scores["sad"]
                save_checkpoint(out / "best.pt", model, spec, {"step": step, **scores})
            with open(out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps({"step": step, "loss": loss.item(), **parts, **scores,
                                     "elapsed_s": time.perf_counter() - start}) + "\n")
            log(f"step {step}: loss {loss.item():.4f}, held-out " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    best_model, best_spec, state = load_checkpoint(out / "best.pt")
    export_module(best_model, best_spec, out / f"{cfg.name}.onnx")
    log(f"best step {state['step']} exported to {out / (cfg.name + '.onnx')}")
    return {"step": step, "best": state, "onnx": str(out / f"{cfg.name}.onnx")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default="runs/refiner")
    ap.add_argument("--teacher", default=RefinerConfig.teacher)
    ap.add_argument("--preset", default="cvunet-xs")
    ap.add_argument("--soft-mattes", nargs="*", default=[], help="folders of RGBA cut-outs with soft alpha")
    ap.add_argument("--cutouts", nargs="*", default=[])
    ap.add_argument("--min-side", type=int, default=RefinerConfig.min_side)
    ap.add_argument("--max-side", type=int, default=RefinerConfig.max_side)
    ap.add_argument("--backgrounds", nargs="*", default=[])
    ap.add_argument("--shots", type=int, default=40)
    ap.add_argument("--tiles-per-shot", type=int, default=24)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--minutes", type=float)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cfg = RefinerConfig(out=a.out, teacher=a.teacher, preset=a.preset, cutouts=a.cutouts, backgrounds=a.backgrounds,
                        soft_mattes=a.soft_mattes, min_side=a.min_side, max_side=a.max_side, shots=a.shots,
                        tiles_per_shot=a.tiles_per_shot, steps=a.steps, minutes=a.minutes,
                        batch_size=a.batch_size, eval_every=a.eval_every, seed=a.seed)
    train_refiner(cfg)


if __name__ == "__main__":
    main()
