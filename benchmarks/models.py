"""Models side by side on held-out data, in one run: accuracy against exact alpha, agreement between
models on real photos, how see-through solid objects come out, FLOPs, model latency and
end-to-end throughput, with a contact sheet per model to look at.

Held-out data (never trained on; `scripts/training_corpus.sh` and `scripts/heldout_photos.sh`):
- HELDOUT/composites: product shots with exact alpha, made only of cut-outs and backdrops that the
  training corpus holds out (every 5th of each);
- HELDOUT/groups/composites (where made): group shots of 2-3 such cut-outs side by side, where a
  model may drop one part of a multi-part subject;
- HELDOUT/photos: real photos from packages no corpus uses, plus the five demo photos.

Every alpha comes through `Matter.matte` with the default settings, the per-image path every
front door (CLI, catalog, service) uses. Numbers:
- composites: SAD, MSE, gradient and connectivity errors (alphamatting.com, /1000), IoU; the
  share of the object's opaque interior (exact alpha = 1, eroded 3 px) that comes out
  semi-transparent (alpha < 0.95), and of the clear background (exact alpha 0, 15 px from the
  object) that does not come out clear (alpha > 0.05: ghosts, shadows);
- photos: IoU and SAD (/1000) against every other model (a matrix), and the share of each model's
  own object (alpha > 0.05, eroded 3 px) that is semi-transparent;
- FLOPs at the model's input size (ONNX conv count), latency at batch 1 on what `auto` chose
  (interleaved, median), and end-to-end images/s of `Matter.matte_files` on the held-out photos
  (decode, model, tiles, despill, PNG encode, write; best of --runs, models alternating).

    python -m cvmatte.benchmarks.models --models u2netp u2netp-product u2netp-s [--heldout heldout] \
        [--repeats 20] [--runs 2] [--out benchmarks/results/<machine>/model-eval]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from cvmatte import Matter
from cvmatte.samples import write_demo_photos
from cvmatte.benchmarks.suite import RESULTS, machine_info, machine_slug
from cvmatte.distill.data import ALPHA_SUFFIX, alpha_file
from cvmatte.engine import metrics
from cvmatte.engine.imageio import IMAGE_SUFFIXES, read_image
from cvmatte.engine.onnx_graph import conv_flops
from cvmatte.engine.preprocess import coarse_input

def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.endswith(ALPHA_SUFFIX))


def held_out(heldout: Path, work: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(real photos, composites, group shots): the held-out photos with the demo photos, the
    composites and the group shots of 2-3 objects where they were made (each with
    `<stem>.alpha.png` beside it)."""
    photos_dir, comps_dir = heldout / "photos", heldout / "composites"
    for d, script in ((photos_dir, "scripts/heldout_photos.sh"), (comps_dir, "scripts/training_corpus.sh")):
        if not d.is_dir() or not _images(d):
            raise FileNotFoundError(f"{d}: no held-out images; make them with `bash {script}`")
    missing = [p.name for p in _images(comps_dir) if not alpha_file(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{comps_dir}: no exact alpha ({ALPHA_SUFFIX}) beside {', '.join(missing[:5])}")
    photos = work / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for p in _images(photos_dir):
        shutil.copyfile(p, photos / p.name)
    write_demo_photos(photos)
    groups_dir = heldout / "groups" / "composites"
    groups = [p for p in _images(groups_dir) if alpha_file(p).is_file()] if groups_dir.is_dir() else []
    return _images(photos), _images(comps_dir), groups


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.erode(mask.astype(np.uint8), k).astype(bool)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def _share(values: np.ndarray, where: np.ndarray) -> float | None:
    return float(values[where].mean()) if where.any() else None


def composite_row(pred: np.ndarray, gt: np.ndarray) -> dict:
    inside = _erode(gt >= 0.999, 3)
    clear = ~_dilate(gt > 0.001, 15)
    return {"sad": metrics.sad(pred, gt), "mse": metrics.mse(pred, gt), "grad": metrics.gradient_error(pred, gt),
            "conn": metrics.connectivity_error(pred, gt), "iou": metrics.iou(pred, gt),
            "semi_inside": _share(pred < 0.95, inside), "ghost_bg": _share(pred > 0.05, clear)}


def semi_share_own(alpha: np.ndarray) -> float | None:
    return _share(alpha < 0.95, _erode(alpha > 0.05, 3))


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def latency(matters: dict[str, Matter], image: np.ndarray, repeats: int) -> dict[str, float]:
    """Median ms of one batch-1 run at each model's own size, the models interleaved."""
    inputs = {n: coarse_input(image, m.spec)[None] for n, m in matters.items()}
    for n, m in matters.items():
        m.backend.run(inputs[n])
    times: dict[str, list[float]] = {n: [] for n in matters}
    for _ in range(repeats):
        for n, m in matters.items():
            t0 = time.perf_counter()
            m.backend.run(inputs[n])
            times[n].append(time.perf_counter() - t0)
    return {n: float(np.median(t) * 1000) for n, t in times.items()}


def throughput(matters: dict[str, Matter], photos: list[Path], runs: int, work: Path) -> dict[str, float]:
    """Best images/s of matte_files over the photos (RGBA PNGs written), the models alternating."""
    best = {n: 0.0 for n in matters}
    for r in range(runs):
        for n, m in matters.items():
            out = work / f"out-{r}-{n}"
            t0 = time.perf_counter()
            report = m.matte_files([str(p) for p in photos], out)
            rate = len(photos) / (time.perf_counter() - t0)
            if report.failed:
                raise RuntimeError(f"{n}: {report.failed[0].error}")
            best[n] = max(best[n], rate)
            shutil.rmtree(out, ignore_errors=True)
    return best


def _checker(h: int, w: int, cell: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where(((yy // cell + xx // cell) % 2)[..., None] == 0, 205, 255).astype(np.float32)


def contact_sheet(images: list[np.ndarray], alphas: list[np.ndarray], path: Path, cols: int = 10, cell: int = 160,
                  title: str = "") -> None:
    """Cut-outs over a checkerboard (what is see-through shows the squares), one cell each."""
    tiles = []
    for rgb, a in zip(images, alphas):
        s = cell / max(rgb.shape[:2])
        size = (max(1, int(rgb.shape[1] * s)), max(1, int(rgb.shape[0] * s)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        al = cv2.resize(a, size, interpolation=cv2.INTER_AREA)[..., None]
        comp = small * al + _checker(size[1], size[0]) * (1 - al)
        tile = np.full((cell, cell, 3), 255, np.uint8)
        tile[:size[1], :size[0]] = np.clip(comp + 0.5, 0, 255).astype(np.uint8)
        tiles.append(tile)
    while len(tiles) % cols:
        tiles.append(np.full((cell, cell, 3), 255, np.uint8))
    sheet = np.vstack([np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)])
    if title:
        bar = np.full((28, sheet.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        sheet = np.vstack([bar, sheet])
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def evaluate(models: list[str], heldout: Path, repeats: int, runs: int, out: Path, log=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    # Files are named by their stem in the tables and sheet names.
    matters = {Path(m).stem if Path(m).suffix else m: Matter(m, device="cpu") for m in models}
    names = list(matters)
    with tempfile.TemporaryDirectory(prefix="cvmatte-models-") as tmp:
        photos, composites, groups = held_out(heldout, Path(tmp))
        log(f"held out: {len(photos)} real photos, {len(composites)} composites and {len(groups)} group shots "
            "with exact alpha")
        rgb_photos = [read_image(p).rgb for p in photos]
        photo_alphas = {n: [m.matte(rgb).alpha for rgb in rgb_photos] for n, m in matters.items()}
        comp_rows: dict[str, list[dict]] = {n: [] for n in names}
        comp_rgb, comp_alphas = [], {n: [] for n in names}
        for p in composites:
            rgb = read_image(p).rgb
            gt = cv2.imread(str(alpha_file(p)), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
            comp_rgb.append(rgb)
            for n, m in matters.items():
                a = m.matte(rgb).alpha
                comp_rows[n].append({"file": p.name, **composite_row(a, gt)})
                comp_alphas[n].append(a)
        group_sad: dict[str, list[float]] = {n: [] for n in names}
        for p in groups:
            rgb = read_image(p).rgb
            gt = cv2.imread(str(alpha_file(p)), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
            for n, m in matters.items():
                group_sad[n].append(metrics.sad(m.matte(rgb).alpha, gt))
        agreement = {a: {b: {"iou": float(np.mean([metrics.iou(x, y) for x, y in zip(photo_alphas[a], photo_alphas[b])])),
                             "iou_min": float(np.min([metrics.iou(x, y) for x, y in zip(photo_alphas[a], photo_alphas[b])])),
                             "sad": float(np.mean([metrics.sad(x, y) for x, y in zip(photo_alphas[a], photo_alphas[b])]))}
                         for b in names if b != a} for a in names}
        lat = latency(matters, rgb_photos[0], repeats)
        rate = throughput(matters, photos, runs, Path(tmp))
        sheets = {}
        for n in names:
            sheets[n] = out / f"contact-photos-{n}.png"
            contact_sheet(rgb_photos, photo_alphas[n], sheets[n], title=f"{n}: held-out real photos")
            contact_sheet(comp_rgb, comp_alphas[n], out / f"contact-composites-{n}.png",
                          title=f"{n}: held-out composites")
    summary = {}
    for n, m in matters.items():
        rows = comp_rows[n]
        summary[n] = {
            # A combined model costs what its members cost.
            "gflop": sum(conv_flops(r.path, r.spec.input_size) for r in (m.model.members or [m.model])) / 1e9,
            "groups_sad": float(np.mean(group_sad[n])) if groups else None,
            "input": list(m.spec.input_size),
            "latency_ms": lat[n], "images_per_s": rate[n],
            **{f"comp_{k}": _mean(rows, k) for k in ("sad", "mse", "grad", "conn", "iou", "semi_inside", "ghost_bg")},
            "photo_semi_own": _mean([{"v": semi_share_own(a)} for a in photo_alphas[n]], "v"),
            "agreement": agreement[n],
        }
    report = {"machine": machine_info(), "models": names, "photos": [p.name for p in photos],
              "composites": [p.name for p in composites], "groups": len(groups), "summary": summary,
              "composite_rows": comp_rows}
    (out / "models.json").write_text(json.dumps(report, indent=1))
    (out / "models.md").write_text(markdown(report))
    log(markdown(report))
    return report


def _pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def markdown(report: dict) -> str:
    names, s = report["models"], report["summary"]
    ref = names[0]
    lines = [f"# Models on held-out data ({len(report['photos'])} real photos, {len(report['composites'])} composites "
             "with exact alpha)", "", f"machine: {report['machine']['cpu']} ({report['machine']['isa']}, "
             f"{report['machine']['cores']} cores), {report['machine']['date']}", "",
             "## Against exact alpha (held-out composites; errors /1000, lower is better)", "",
             f"| model | SAD | vs {ref} | MSE ×1e3 | gradient | connectivity | IoU | semi-transparent inside | "
             f"background not clear | group shots ({report.get('groups', 0)}): SAD | vs {ref} |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        r = s[n]
        groups = ("- | -" if r.get("groups_sad") is None else
                  f"{r['groups_sad']:.2f} | {100 * (r['groups_sad'] / s[ref]['groups_sad'] - 1):+.1f}%")
        lines.append(f"| {n} | {r['comp_sad']:.2f} | {100 * (r['comp_sad'] / s[ref]['comp_sad'] - 1):+.1f}% | "
                     f"{1000 * r['comp_mse']:.2f} | {r['comp_grad']:.2f} | {r['comp_conn']:.2f} | {r['comp_iou']:.3f} | "
                     f"{_pct(r['comp_semi_inside'])} | {_pct(r['comp_ghost_bg'], 2)} | {groups} |")
    lines += ["", "## Agreement on held-out real photos (IoU mean / min, SAD /1000 against the column's model)", "",
              "| model | " + " | ".join(names) + " | semi-transparent share of own object |",
              "|---|" + "---|" * (len(names) + 1)]
    for n in names:
        cells = ["-" if b == n else f"{s[n]['agreement'][b]['iou']:.3f} / {s[n]['agreement'][b]['iou_min']:.3f}, "
                 f"SAD {s[n]['agreement'][b]['sad']:.2f}" for b in names]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {_pct(s[n]['photo_semi_own'])} |")
    lines += ["", "## Cost (each model on what --backend auto --precision auto chose, batch 1; end to end: "
              "Matter.matte_files on the real photos)", "",
              "| model | input | GFLOP | vs " + ref + " | model ms | speed-up | end-to-end images/s | speed-up |",
              "|---|---|---|---|---|---|---|---|"]
    for n in names:
        r = s[n]
        lines.append(f"| {n} | {r['input'][0]}x{r['input'][1]} | {r['gflop']:.2f} | {r['gflop'] / s[ref]['gflop']:.2f}x | "
                     f"{r['latency_ms']:.0f} | {s[ref]['latency_ms'] / r['latency_ms']:.2f}x | {r['images_per_s']:.2f} | "
                     f"{r['images_per_s'] / s[ref]['images_per_s']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["u2netp"], help="zoo names or ONNX files; the first is the reference")
    ap.add_argument("--heldout", type=Path, default=Path("heldout"))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    out = args.out or RESULTS / machine_slug(machine_info()) / "model-eval"
    evaluate(args.models, args.heldout, args.repeats, args.runs, out)


if __name__ == "__main__":
    main()
