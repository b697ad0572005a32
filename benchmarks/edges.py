"""Edge accuracy at high resolution: the upsampled coarse alpha, the tiles refined by the
model-free guided filter, and the tiles refined by the learned refiner, side by side on
synthetic product shots with exact alpha at 1, 4 and 16 megapixels.

Errors are counted in two regions: within 8 px of the true edge (metrics.edge_band), and in the
engine's uncertain band (where the tiles decide); outside the band all three are the coarse alpha.
The evaluation shots use seeds 0-2, which no training run draws (distill/refiner.SEED_BASE).

    python -m cvmatte.benchmarks.edges [--megapixels 1 4 16] [--refiner cvunet-refiner]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cvmatte import Matter
from cvmatte.samples import SCENES, make_composite
from cvmatte.engine import metrics, zoo


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, nargs="+", default=[1.0, 4.0, 16.0])
    ap.add_argument("--refiner", default="cvunet-refiner" if "cvunet-refiner" in zoo.ZOO else None,
                    help="learned refiner (zoo name or ONNX); default: the packaged one, if any")
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    matters = {"guided filter": Matter(device="cpu", despill=0.0)}
    if args.refiner:
        matters["learned refiner"] = Matter(device="cpu", despill=0.0, refiner=args.refiner)
    print("| MP | scene | alpha | SAD edge | gradient edge | SAD band | gradient band | MSE band ×1e3 | refine s | tiles |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for mp in args.megapixels:
        for seed, (fg, bg) in enumerate(SCENES[:args.scenes]):
            c = make_composite(mp, seed=seed, fg_photo=fg, bg_photo=bg)
            edge = metrics.edge_band(c.alpha, 8)
            results = {}
            for name, m in matters.items():
                t0 = time.perf_counter()
                results[name] = (m.matte(c.rgb), time.perf_counter() - t0)
            first = next(iter(results.values()))[0]
            band = first.band if first.band is not None else edge
            alphas = [("coarse, upsampled", first.coarse, 0.0, 0)]
            alphas += [(name, r.alpha, r.timings["refine_s"], r.tiles) for name, (r, _) in results.items()]
            for name, a, secs, tiles in alphas:
                row = {"megapixels": mp, "scene": f"{fg.split('.')[0]} on {bg.split('.')[0]}", "alpha": name,
                       "sad_edge": metrics.sad(a, c.alpha, edge), "grad_edge": metrics.gradient_error(a, c.alpha, edge),
                       "sad_band": metrics.sad(a, c.alpha, band), "grad_band": metrics.gradient_error(a, c.alpha, band),
                       "mse_band": metrics.mse(a, c.alpha, band), "refine_s": secs, "tiles": tiles}
                rows.append(row)
                print(f"| {mp:g} | {row['scene']} | {name} | {row['sad_edge']:.2f} | {row['grad_edge']:.2f} | "
                      f"{row['sad_band']:.2f} | {row['grad_band']:.2f} | {row['mse_band'] * 1e3:.1f} | "
                      f"{secs:.2f} | {tiles or '-'} |")
    print("\nmeans over scenes, relative to the upsampled coarse alpha:")
    for mp in args.megapixels:
        base = [r for r in rows if r["megapixels"] == mp and r["alpha"] == "coarse, upsampled"]
        for name in ["guided filter", "learned refiner"]:
            mine = [r for r in rows if r["megapixels"] == mp and r["alpha"] == name]
            if not mine:
                continue
            rel = {k: np.mean([m[k] for m in mine]) / np.mean([b[k] for b in base]) - 1
                   for k in ("sad_band", "grad_band", "sad_edge", "grad_edge")}
            print(f"  {mp:g} MP {name}: SAD band {rel['sad_band']:+.0%}, gradient band {rel['grad_band']:+.0%}, "
                  f"SAD edge {rel['sad_edge']:+.0%}, gradient edge {rel['grad_edge']:+.0%}, "
                  f"refine {np.mean([m['refine_s'] for m in mine]):.2f} s")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
