"""Tile refiners on real soft mattes: the upsampled coarse alpha, the guided filter and learned
refiners, side by side on the held-out photographic cut-outs of distill/soft_mattes.py (trees,
shrubs, grasses, clouds with their hand-made soft alpha), never trained on.

Each held-out cut-out is placed over a backdrop (a studio gradient, or one of the held-out real
photos, defocused or not: distill/corpus.compose) at each of several sizes, so the upsampling
scale (full-resolution pixels per model pixel) varies: where a learned refiner starts to beat
the guided filter decides its MIN_SCALE. One coarse pass per composite; every refiner finishes
the same coarse alpha, and the learned ones run at every scale here (their MIN_SCALE lifted), as
the engine runs them (the network, then a guided filter over its alpha) and as the network alone.

Errors against the exact alpha: SAD and gradient error inside the engine's band (where the
tiles decide; outside it every refiner leaves the coarse alpha), and SAD over the whole image.

    python -m cvmatte.benchmarks.soft_edges --mattes soft-mattes --backdrops heldout/photos \\
        [--sides 640 1280 2560] [--every 3 | --leave-out-every 5] [--refiner cvunet-refiner new.onnx] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import cv2
import numpy as np

from cvmatte import Matter
from cvmatte.distill.corpus import compose, load_backgrounds
from cvmatte.distill.soft_mattes import read_split
from cvmatte.engine import metrics

#: Seeds of the evaluation composites; the refiner's training draws from its own generator.
SEED = 7_000


class _Unchanged:
    """A `smooth` step that leaves the learned alpha as the network gave it."""

    def refine(self, rgb, alpha, scale):
        return alpha


def refiners(matter: Matter, names: list[str]) -> dict:
    out = {"guided filter": matter.refiner("guided")}
    for name in names:
        learned = copy.copy(matter.refiner(name))
        learned.MIN_SCALE = 0.0  # measured at every scale: where it should engage is the question
        raw = copy.copy(learned)
        raw.smooth = _Unchanged()
        out[f"learned, network only: {Path(name).stem}"] = raw
        out[f"learned + guided pass: {Path(name).stem}"] = learned
    return out


def evaluate(matter: Matter, cutouts: list[Path], backdrops: list[np.ndarray], sides: list[int],
             names: list[str], log=print) -> list[dict]:
    rows = []
    engine = matter.engine
    finishers = refiners(matter, names)
    for k, path in enumerate(cutouts):
        cut = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
        for side in sides:
            rng = np.random.default_rng([SEED, k, side])
            rgb, truth = compose(cut, backdrops[int(rng.integers(len(backdrops)))], rng, side=side)
            coarse_small = engine.coarse([rgb])[0]
            scale = engine.upsampling_scale(*truth.shape)
            results = {}
            for name, refiner in finishers.items():
                t0 = time.perf_counter()
                results[name] = (engine.finish(rgb, coarse_small, refiner=refiner), time.perf_counter() - t0)
            first = next(iter(results.values()))[0]
            band = first.band if first.band is not None else np.ones_like(truth, bool)
            alphas = {"coarse, upsampled": (first.coarse, 0.0)}
            alphas.update({name: (r.alpha, secs) for name, (r, secs) in results.items()})
            for name, (a, secs) in alphas.items():
                rows.append({"cutout": path.name, "side": side, "scale": round(scale, 2), "alpha": name,
                             "sad_band": metrics.sad(a, truth, band), "grad_band": metrics.gradient_error(a, truth, band),
                             "sad": metrics.sad(a, truth), "band_share": float(band.mean()),
                             "soft_share": float(((truth > 0.03) & (truth < 0.97)).mean()), "seconds": secs})
        log(f"{k + 1}/{len(cutouts)} {path.name}")
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per size and alpha: mean errors, and against the guided filter on the same images."""
    out = []
    for side in sorted({r["side"] for r in rows}):
        at = [r for r in rows if r["side"] == side]
        guided = {r["cutout"]: r for r in at if r["alpha"] == "guided filter"}
        for name in dict.fromkeys(r["alpha"] for r in at):
            mine = [r for r in at if r["alpha"] == name]
            g = [guided[r["cutout"]] for r in mine]
            out.append({
                "side": side, "scale": float(np.mean([r["scale"] for r in mine])), "alpha": name, "images": len(mine),
                "sad_band": float(np.mean([r["sad_band"] for r in mine])),
                "grad_band": float(np.mean([r["grad_band"] for r in mine])),
                "sad": float(np.mean([r["sad"] for r in mine])),
                "sad_band_vs_guided": float(np.sum([r["sad_band"] for r in mine]) / np.sum([r["sad_band"] for r in g]) - 1),
                "grad_band_vs_guided": float(np.sum([r["grad_band"] for r in mine]) / np.sum([r["grad_band"] for r in g]) - 1),
                "wins_sad_band": int(sum(r["sad_band"] < q["sad_band"] for r, q in zip(mine, g))),
                "seconds": float(np.mean([r["seconds"] for r in mine]))})
    return out


def markdown(table: list[dict]) -> list[str]:
    lines = ["| longer side px | scale | alpha | images | SAD band | gradient band | SAD image | SAD band vs guided | "
             "gradient band vs guided | images better than guided (SAD band) | refine s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        lines.append(f"| {t['side']} | {t['scale']:.1f} | {t['alpha']} | {t['images']} | {t['sad_band']:.2f} | "
                     f"{t['grad_band']:.2f} | {t['sad']:.2f} | {t['sad_band_vs_guided']:+.1%} | "
                     f"{t['grad_band_vs_guided']:+.1%} | {t['wins_sad_band']}/{t['images']} | {t['seconds']:.2f} |")
    return lines


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mattes", type=Path, default=Path("soft-mattes"), help="distill/soft_mattes.py's output")
    ap.add_argument("--split", default="heldout")
    ap.add_argument("--backdrops", type=Path, nargs="+", default=[Path("heldout/photos")])
    ap.add_argument("--sides", type=int, nargs="+", default=[640, 1280, 2560])
    ap.add_argument("--every", type=int, default=1, help="take every n-th cut-out of the split")
    ap.add_argument("--leave-out-every", type=int, default=0,
                    help="leave out every n-th cut-out (those a setting was chosen on), keep the rest")
    ap.add_argument("--model", default=None, help="the coarse model (default: the packaged default)")
    ap.add_argument("--refiner", nargs="*", default=["cvunet-refiner"], help="learned refiners (zoo names or ONNX)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    cutouts = read_split(a.mattes, a.split)[::a.every]
    if a.leave_out_every:
        cutouts = [p for i, p in enumerate(cutouts) if i % a.leave_out_every]
    if not cutouts:
        raise SystemExit(f"{a.mattes}/{a.split}: no cut-outs (scripts/soft_mattes.sh makes them)")
    backdrops = load_backgrounds(a.backdrops, max_side=2048)
    matter = Matter(a.model, device="cpu", despill=0.0) if a.model else Matter(device="cpu", despill=0.0)
    rows = evaluate(matter, cutouts, backdrops, a.sides, a.refiner)
    table = summary(rows)
    lines = markdown(table)
    print("\n".join(lines))
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "soft_edges.json").write_text(json.dumps({"argv": argv, "rows": rows, "summary": table}, indent=1))
        (a.out / "soft_edges.md").write_text(
            f"# Tile refiners on held-out real soft mattes\n\nModel: {matter.spec.name}; "
            f"{len(cutouts)} cut-outs from {a.mattes}/{a.split}; backdrops {', '.join(map(str, a.backdrops))}.\n\n"
            + "\n".join(lines) + "\n")
    return table


if __name__ == "__main__":
    main()
