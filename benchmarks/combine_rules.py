"""Which per-pixel rule combines two models best, measured on held-out truth (issue 23).

Each member's coarse alpha is computed once per image; every rule then combines them at the first
member's size and goes through the same finish (upsampling, band, guided filter) as `Matter.matte`,
and SAD/IoU against exact alpha are reported per truth folder, side by side in one run.

    python -m cvmatte.benchmarks.combine_rules --truth heldout/composites heldout/groups/composites \
        --members isnet-general-use u2netp --json benchmarks/results/<machine>/combine_rules.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..engine import metrics, preprocess
from ..engine.backends.combined import RULES
from ..engine.imageio import read_image
from .pipeline_vs_loop import images_in


def evaluate(truth_dirs: list[Path], members: list[str], backend: str, precision: str, rules: list[str],
             log=print) -> dict:
    from cvmatte import Matter  # the benchmark drives the public front door, as users do

    matters = [Matter(m, backend, "cpu", precision=precision) for m in members]
    primary = matters[0]
    result = {"members": members, "backend": backend, "precision": precision, "sets": {}}
    try:
        for folder in truth_dirs:
            rows = []
            t0 = time.perf_counter()
            for path in images_in(folder):
                rgb = read_image(path).rgb
                gt = read_image(path.with_name(path.stem + ".alpha.png")).rgb[..., 0].astype(np.float32) / 255
                coarse = [m.engine.coarse([rgb])[0] for m in matters]
                size = coarse[0].shape
                coarse = [coarse[0]] + [preprocess.upsample_alpha(c, size) for c in coarse[1:]]
                row = {"image": path.name}
                for name, m, c in zip(members, matters, coarse):
                    a = m.engine.finish(rgb, c).alpha
                    row[name] = (metrics.sad(a, gt), metrics.iou(a, gt))
                for rule in rules:
                    a = primary.engine.finish(rgb, np.clip(RULES[rule](coarse), 0, 1).astype(np.float32)).alpha
                    row[rule] = (metrics.sad(a, gt), metrics.iou(a, gt))
                rows.append(row)
            names = members + rules
            summary = {n: {"sad": float(np.mean([r[n][0] for r in rows])),
                           "median_sad": float(np.median([r[n][0] for r in rows])),
                           "worst_sad": float(np.max([r[n][0] for r in rows])),
                           "iou": float(np.mean([r[n][1] for r in rows]))} for n in names}
            result["sets"][str(folder)] = {"images": len(rows), "summary": summary, "rows": rows}
            log(f"\n{folder}: {len(rows)} images, {time.perf_counter() - t0:.0f} s")
            base = summary[members[-1]]["sad"]
            log(f"{'':24s} {'SAD':>7s} {'vs ' + members[-1]:>14s} {'median':>7s} {'worst':>7s} {'IoU':>7s}")
            for n in names:
                s = summary[n]
                log(f"{n:24s} {s['sad']:7.3f} {100 * (s['sad'] / base - 1):+13.1f}% {s['median_sad']:7.3f} "
                    f"{s['worst_sad']:7.2f} {s['iou']:7.4f}")
    finally:
        for m in matters:
            m.close()
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", type=Path, nargs="+", required=True, help="folders of NAME.jpg + NAME.alpha.png")
    ap.add_argument("--members", nargs="+", default=["isnet-general-use", "u2netp"])
    ap.add_argument("--rules", nargs="+", default=list(RULES))
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    result = evaluate(args.truth, args.members, args.backend, args.precision, args.rules)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
