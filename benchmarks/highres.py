"""Time and peak memory of one image through `Matter.matte_files`, by image size (issue 17).

Each image size runs in fresh processes (one per repeat): the child loads the default model
(`Matter()`: the packaged u2netp-product on ONNX Runtime CPU), notes its resident memory, warms
up on one small image (ONNX Runtime's first-run setup, the thread pools, the encoders), then
cuts out the measured image through the real per-image path (engine/catalog/runner.py: read and
decode, coarse pass, tiles over the uncertain band, foreground, quality, PNG encode, write) and
reports its row's stage timings and its peak resident memory (getrusage's ru_maxrss, read in the
child after the run). Time is the wall time of the `matte_files` call, best of the repeats; the
stage shares come from that run's row (`timings`: decode_s ... write_s over total_s; "other" is
what no stage timer covers: the model input's resize and the hand-offs between threads).

The input is a synthetic product shot (cvmatte.samples.make_composite: a bottle outline with
hair-thin strands drawn at the asked size, a real photo's texture upscaled into it), written as a
JPEG of quality 92, in one of two scenes:

- busy (the default, as first measured): over the defocused motorcycle photo, which the default
  model takes in part for the product: its uncertain region is a share of the frame, so the
  band, and the foreground's soft pixels, grow with the area;
- studio: the same product's exact layers over a light grey gradient, as catalog shots are taken:
  the uncertain band is the outline, and grows with the edge.

    python -m cvmatte.benchmarks.highres [--sizes 1 4 16 50] [--repeats 2] [--scene busy|studio] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The row's stage timers (engine/catalog/runner.py, engine/matting.py), in the order they run.
STAGES = ["decode_s", "coarse_s", "refine_s", "foreground_s", "quality_s", "write_s"]
#: The issue's targets: the time at 16 MP against 1 MP, the peak at 16 MP, the peak at 50 MP.
TARGET_RATIO_16 = 2.5
TARGET_PEAK_16 = 1e9
TARGET_PEAK_50 = 3e9
MB = 1e6
#: The default tile side (the guided filter's own, MatteSettings.tile_size None), for the tiles'
#: share of the image's pixels.
TILE = 1024


# --------------------------------------------------------------------------- the child process


def current_rss() -> int:
    """Bytes resident now (VmRSS); the peak so far where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss()


def peak_rss() -> int:
    """Bytes: this process's peak resident memory (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def measure(image: str, out_dir: str, warmup: str | None = None) -> dict:
    """One image through Matter.matte_files in this process: its row, the wall time and the memory."""
    t0 = time.perf_counter()
    from cvmatte import Matter

    rss_start = current_rss()
    matter = Matter()
    load_s = time.perf_counter() - t0
    rss_loaded = current_rss()
    out = Path(out_dir)
    if warmup:
        matter.matte_files([warmup], out / "warmup")
    rss_warm = current_rss()
    t0 = time.perf_counter()
    report = matter.matte_files([image], out / "run")
    wall = time.perf_counter() - t0
    peak = peak_rss()  # after the run, before anything is released
    rss_after = current_rss()
    describe = matter.describe()
    matter.close()
    import cvmatte.engine

    code = str(Path(cvmatte.engine.__file__).resolve().parent)
    [row] = report.rows
    written = {k: Path(p).stat().st_size for k, p in row.outputs.items() if Path(p).is_file()}
    return {"wall_s": wall, "row": row.to_dict(), "output_bytes": written, "load_s": load_s,
            "rss_start": rss_start, "rss_loaded": rss_loaded, "rss_warm": rss_warm, "rss_after": rss_after,
            "peak_rss": peak, "engine": describe, "code": code}


def probe(image: str) -> dict:
    """Each step of the per-image path alone, one after the other in this process, on the engine
    of the default Matter: its seconds, and the peak of the arrays it allocated (tracemalloc sees
    numpy's and OpenCV's arrays; not Pillow's own image buffer nor ONNX Runtime's arena) above
    what was held before the step, as MB and as bytes per image pixel. Also the shares that set
    the costs: the band, the tiles, the soft pixels and the foreground's crop."""
    import tracemalloc

    import numpy as np

    from cvmatte import Matter
    from cvmatte.engine import imageio, outputs, preprocess, quality, tiling
    from cvmatte.engine.matting import MatteResult, dequantize, quantize

    data = Path(image).read_bytes()
    steps: list[dict] = []
    with Matter() as matter:
        eng, s = matter.engine, matter.settings
        rgb = imageio.decode_image(data).rgb  # warm-up: the decoder, the model, the refiner
        H, W = rgb.shape[:2]
        n = H * W
        eng.matte(rgb)
        del rgb
        tracemalloc.start()

        def step(name, fn):
            tracemalloc.reset_peak()
            held = tracemalloc.get_traced_memory()[0]
            t0 = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - t0
            current, peak = tracemalloc.get_traced_memory()
            steps.append({"step": name, "seconds": seconds, "peak_bytes": peak - held, "kept_bytes": current - held,
                          "peak_bytes_per_px": (peak - held) / n})
            return out

        rgb = step("decode (Pillow, to RGB uint8)", lambda: imageio.decode_image(data)).rgb
        x = step("model input (resize, normalise)", lambda: eng.coarse_input(rgb))
        small = step("coarse pass (model)", lambda: eng.backend.run(x[None])[0][0])
        coarse = step("upsample coarse alpha", lambda: preprocess.upsample_alpha(small, (H, W)))
        weight = step("band weight (enlarged)", lambda: eng.band_weight(small, (H, W)))
        band = weight > 0
        tiles = step("plan tiles", lambda: tiling.plan_tiles(band, s.tile_size or TILE, s.tile_overlap))
        scale = eng.upsampling_scale(H, W)
        refined = step("guided filter over the tiles", lambda: eng.refiner.refine(
            [rgb[t.slices] for t in tiles], [coarse[t.slices] for t in tiles], scale))
        alpha = step("blend tiles", lambda: tiling.blend(coarse, weight, tiles, refined, s.tile_overlap))
        del refined
        alpha = step("quantize to 8 bits", lambda: dequantize(quantize(alpha)))
        foreground = step("foreground (blur-fusion)", lambda: eng.foreground(rgb, alpha))
        step("quality measures", lambda: quality.measure(alpha, coarse))
        result = MatteResult(alpha, coarse, foreground, tiles=len(tiles))
        step("encode RGBA PNG", lambda: outputs.encode(result, outputs.OutputSpec()))
        tracemalloc.stop()
        # What estimate_foreground works on (engine/refine.py): the soft pixels, in their bounding
        # box grown by the wide pass's radius.
        soft = (alpha > 1.0 / 512) & (alpha < 1.0 - 1.0 / 512)
        rows, cols = np.nonzero(soft.any(axis=1))[0], np.nonzero(soft.any(axis=0))[0]
        radius = max(90, int(10 * scale))
        crop = 0.0
        if len(rows):
            crop = ((min(H, rows[-1] + 1 + radius) - max(0, rows[0] - radius))
                    * (min(W, cols[-1] + 1 + radius) - max(0, cols[0] - radius))) / n
        shares = {"band": float(band.mean()), "soft": float(soft.mean()),
                  "soft_outside_band": float((soft & ~band).mean()),
                  "foreground_crop": float(crop),
                  "tile_px": sum((t.y1 - t.y0) * (t.x1 - t.x0) for t in tiles) / n}
    return {"width": W, "height": H, "tiles": len(tiles), "scale": scale, "steps": steps, "shares": shares}


def _child(argv: list[str]) -> None:
    mode, image, out_dir, warmup, result = argv
    data = measure(image, out_dir, warmup or None) if mode == "measure" else probe(image)
    Path(result).write_text(json.dumps(data))


def run_child(image: Path, out_dir: Path, warmup: Path | None, timeout: float, mode: str = "measure") -> dict:
    """measure() (or probe()) in a fresh interpreter; a crash, a kill (out of memory) or a timeout
    becomes {"error": ...} with the seconds it ran."""
    result = out_dir / "result.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    code = "import sys; from cvmatte.benchmarks.highres import _child; _child(sys.argv[1:])"
    cmd = [sys.executable, "-c", code, mode, str(image), str(out_dir), str(warmup or ""), str(result)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "ran_s": time.perf_counter() - t0}
    ran = time.perf_counter() - t0
    if proc.returncode != 0 or not result.is_file():
        if proc.returncode < 0:
            why = f"killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "")
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            why = f"exit status {proc.returncode}: " + " / ".join(tail)
        return {"error": why, "ran_s": ran}
    data = json.loads(result.read_text())
    data["ran_s"] = ran
    return data


# --------------------------------------------------------------------------- inputs and machine


def write_input(path: Path, megapixels: float, seed: int = 0, scene: str = "busy") -> tuple[int, int]:
    """The product shot at `megapixels` in `scene` (busy or studio), as a JPEG of quality 92."""
    import numpy as np
    from PIL import Image

    from cvmatte.samples import make_composite

    c = make_composite(megapixels, seed=seed, fg_photo="coffee.png", bg_photo="motorcycle_left.png")
    rgb = c.rgb
    if scene == "studio":
        grey = np.linspace(236.0, 212.0, c.alpha.shape[0], dtype=np.float32)[:, None, None]  # light, darker towards the floor
        a = c.alpha[..., None]
        rgb = np.clip(c.foreground * a + grey * (1 - a) + 0.5, 0, 255).astype(np.uint8)
    h, w = rgb.shape[:2]
    Image.fromarray(rgb).save(path, quality=92)
    return w, h


def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu"] = fields.get("Model name", info["cpu"])
        flags = fields.get("Flags", "").split()
        info["isa"] = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
                       if f in flags]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        info["memory_gib"] = round(kib / 2 ** 20, 1)
    except (OSError, StopIteration):
        pass
    for name in ("numpy", "cv2", "onnxruntime"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # a missing or broken library is not this benchmark's business
            pass
    return info


# --------------------------------------------------------------------------- the table


def summarize(megapixels: float, size: tuple[int, int], input_bytes: int, runs: list[dict]) -> dict:
    """One table row from the runs of one size: the best time, its run's stages, the worst peak."""
    good = [r for r in runs if "error" not in r and r["row"]["status"] in ("ok", "review")]
    entry = {"megapixels": megapixels, "width": size[0], "height": size[1], "input_bytes": input_bytes,
             "runs": runs}
    if not good:
        errors = [r.get("error") or r["row"].get("error") for r in runs]
        entry["error"] = "; ".join(str(e) for e in errors)
        entry["ran_s"] = max(r.get("ran_s", 0.0) for r in runs)
        return entry
    best = min(good, key=lambda r: r["wall_s"])
    timings = best["row"]["timings"]
    total = timings["total_s"]
    stage_s = {k: timings.get(k, 0.0) for k in STAGES}
    shares = {k: v / total for k, v in stage_s.items()}
    shares["other"] = 1.0 - sum(shares.values())
    tiles = best["row"]["tiles"]
    entry.update({
        "seconds": best["wall_s"], "all_seconds": [r["wall_s"] for r in good], "row_total_s": total,
        "stage_s": stage_s, "shares": shares, "tiles": tiles,
        "tile_area_share": tiles * min(TILE, size[0]) * min(TILE, size[1]) / (size[0] * size[1]),
        "peak_rss": max(r["peak_rss"] for r in good),
        "rss_loaded": best["rss_loaded"], "rss_warm": best["rss_warm"],
        "peak_over_loaded": max(r["peak_rss"] - r["rss_loaded"] for r in good),
        "peak_over_warm": max(r["peak_rss"] - r["rss_warm"] for r in good),
        "output_bytes": best["output_bytes"], "status": best["row"]["status"], "flags": best["row"]["flags"],
        "engine": best["engine"], "code": best.get("code"),
    })
    return entry


def add_ratios(rows: list[dict]) -> float | None:
    """Each row's time over the smallest size's; returns that size (None if it failed)."""
    base = rows[0] if rows and "seconds" in rows[0] else None
    for r in rows:
        r["ratio"] = r["seconds"] / base["seconds"] if base and "seconds" in r else None
    return base["megapixels"] if base else None


def targets(rows: list[dict]) -> list[str]:
    by_mp = {r["megapixels"]: r for r in rows}
    lines = []
    if 16 in by_mp and 1 in by_mp and "seconds" in by_mp[16] and "seconds" in by_mp[1]:
        ratio = by_mp[16]["seconds"] / by_mp[1]["seconds"]
        lines.append(f"16 MP time / 1 MP time = {ratio:.2f}x (target <= {TARGET_RATIO_16}x): "
                     + ("met" if ratio <= TARGET_RATIO_16 else "NOT met"))
    for mp, limit in ((16, TARGET_PEAK_16), (50, TARGET_PEAK_50)):
        r = by_mp.get(mp)
        if r is None:
            continue
        if "peak_rss" in r:
            lines.append(f"peak RSS at {mp} MP = {r['peak_rss'] / 1e9:.2f} GB (target <= {limit / 1e9:.0f} GB): "
                         + ("met" if r["peak_rss"] <= limit else "NOT met"))
        else:
            lines.append(f"{mp} MP: no result ({r['error']}): target NOT met")
    return lines


def fmt_mp(mp: float) -> str:
    return f"{mp:g}"


def table(rows: list[dict], base_mp: float | None) -> list[str]:
    head = ["MP", "pixels", "tiles (area)", "best s", f"x {fmt_mp(base_mp) if base_mp else '?'} MP"] \
        + [s[:-2] for s in STAGES] + ["other", "peak RSS MB", "peak - model MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [fmt_mp(r["megapixels"]), f"{r['width']}x{r['height']}"]
        if "seconds" not in r:
            cells += [f"failed after {r['ran_s']:.0f} s: {r['error']}"] + [""] * (len(head) - 3)
        else:
            cells += [f"{r['tiles']} ({100 * r['tile_area_share']:.0f}%)", f"{r['seconds']:.2f}",
                      f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"]
            cells += [f"{100 * r['shares'][s]:.0f}%" for s in STAGES + ["other"]]
            cells += [f"{r['peak_rss'] / MB:.0f}", f"{r['peak_over_loaded'] / MB:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def stage_table(rows: list[dict]) -> list[str]:
    head = ["MP", "row total s"] + [s for s in STAGES] + ["RSS after load MB", "after warm-up MB",
                                                           "peak - after warm-up MB", "PNG MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "seconds" not in r:
            continue
        png = sum(r["output_bytes"].values()) / MB
        lines.append("| " + " | ".join([fmt_mp(r["megapixels"]), f"{r['row_total_s']:.2f}"]
                                       + [f"{r['stage_s'][s]:.3f}" for s in STAGES]
                                       + [f"{r['rss_loaded'] / MB:.0f}", f"{r['rss_warm'] / MB:.0f}",
                                          f"{r['peak_over_warm'] / MB:.0f}", f"{png:.1f}"]) + " |")
    return lines


def probe_table(rows: list[dict]) -> list[str]:
    """--probe: each step alone (in-process, after a warm-up), seconds and tracemalloc peak."""
    head = ["step"] + [f"{fmt_mp(r['megapixels'])} MP: s, peak MB (B/px)" for r in rows]
    lines = ["Each step alone (`--probe`: one process per size, the steps one after the other after a "
             "warm-up image; peak = the arrays the step allocated at once, numpy and OpenCV, seen by "
             "tracemalloc; Pillow's own buffer and ONNX Runtime's arena are not seen):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, first in enumerate(rows[0]["probe"]["steps"]):
        cells = [first["step"]]
        for r in rows:
            st = r["probe"]["steps"][i]
            cells.append(f"{st['seconds']:.3f}, {st['peak_bytes'] / MB:.0f} ({st['peak_bytes_per_px']:.0f})")
        lines.append("| " + " | ".join(cells) + " |")
    shares = [("band (weight > 0)", "band"), ("tile pixels / image pixels", "tile_px"),
              ("soft pixels (1/512 < alpha < 1 - 1/512)", "soft"),
              ("soft pixels outside the band", "soft_outside_band"),
              ("foreground crop (soft bbox + radius)", "foreground_crop")]
    for label, key in shares:
        lines.append("| " + " | ".join([label] + [f"{100 * r['probe']['shares'][key]:.0f}%" for r in rows]) + " |")
    lines.append("| " + " | ".join(["upsampling scale (px per model px)"]
                                   + [f"{r['probe']['scale']:.1f}" for r in rows]) + " |")
    return lines


def markdown(result: dict) -> str:
    m = result["machine"]
    isa = ", ".join(m.get("isa", [])) or "?"
    rows = result["rows"]
    lines = [
        "# One image through Matter.matte_files, by size",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({isa}), {m.get('memory_gib', '?')} GiB; "
        f"ONNX Runtime {m.get('onnxruntime', '?')}, OpenCV {m.get('cv2', '?')}, numpy {m.get('numpy', '?')}.",
        f"Engine: {result.get('engine', '?')}; the engine's code from {result.get('code') or '?'}.",
        f"Command: `{result['command']}`; scene: {result.get('scene', 'busy')} (see the module's docstring).",
        "",
        f"Each size: {result['repeats']} fresh process(es), best wall time of `matte_files` (one image: "
        "decode, coarse pass, tiles, foreground, quality, PNG encode, write) after one warm-up image; "
        "stage shares of that run's row total; peak RSS = ru_maxrss in the child after the run (the "
        "highest of the repeats), and that minus the RSS right after loading the model. "
        "MB = 10^6 bytes; tiles are 512 px a side, (area) = their pixels (overlaps counted twice) over the image's.",
        "",
        *table(rows, result["base_megapixels"]),
        "",
        "Stage seconds of the same runs:",
        "",
        *stage_table(rows),
        "",
    ]
    probes = [r for r in rows if "probe" in r and "error" not in r["probe"]]
    if probes:
        lines += probe_table(probes) + [""]
    if result["targets"]:
        lines += ["Targets (issue 17):", ""] + [f"- {t}" for t in result["targets"]] + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 16, 50], help="megapixels, smallest first")
    ap.add_argument("--repeats", type=int, default=2, help="fresh processes per size; the best time counts")
    ap.add_argument("--scene", choices=["busy", "studio"], default="busy",
                    help="the product over a photo the model half takes for it (busy), or over a studio grey")
    ap.add_argument("--out", type=Path, default=None, help="write highres.json and highres.md here")
    ap.add_argument("--timeout", type=float, default=600, help="seconds one child may run")
    ap.add_argument("--repeat-under", type=float, default=240,
                    help="no further repeat of a size whose first run took longer than this (seconds)")
    ap.add_argument("--probe", action="store_true",
                    help="also time each step alone, with its peak of numpy/OpenCV arrays (one more process per size)")
    args = ap.parse_args(argv)
    command = "python -m cvmatte.benchmarks.highres " + shlex.join(sys.argv[1:] if argv is None else argv)
    sizes = sorted(args.sizes)

    rows = []
    with tempfile.TemporaryDirectory(prefix="cvmatte-highres-") as tmp:
        tmp = Path(tmp)
        warmup = tmp / "warmup.jpg"
        write_input(warmup, 0.2, seed=1)
        for mp in sizes:
            image = tmp / f"product_{fmt_mp(mp)}mp.jpg"
            size = write_input(image, mp, scene=args.scene)
            print(f"{fmt_mp(mp)} MP: {size[0]}x{size[1]}, {image.stat().st_size / MB:.1f} MB JPEG", flush=True)
            runs = []
            for rep in range(args.repeats):
                out = tmp / f"out_{fmt_mp(mp)}_{rep}"
                r = run_child(image, out, warmup, args.timeout)
                runs.append(r)
                if "error" in r:
                    print(f"  run {rep + 1}: {r['error']} ({r['ran_s']:.0f} s)", flush=True)
                    if r["error"].startswith(("timed out", "killed")):
                        _remove_tree(out)
                        break  # the next one would only do the same
                else:
                    print(f"  run {rep + 1}: {r['wall_s']:.2f} s, {r['row']['tiles']} tiles, "
                          f"peak RSS {r['peak_rss'] / MB:.0f} MB", flush=True)
                    r["row"]["outputs"] = {k: Path(p).name for k, p in r["row"]["outputs"].items()}
                _remove_tree(out)
                if "error" not in r and r["wall_s"] > args.repeat_under:
                    break
            rows.append(summarize(mp, size, image.stat().st_size, runs))
            if args.probe:
                out = tmp / f"probe_{fmt_mp(mp)}"
                rows[-1]["probe"] = run_child(image, out, None, args.timeout, mode="probe")
                _remove_tree(out)
                print(f"  probe: {rows[-1]['probe'].get('error', 'done')}", flush=True)
            image.unlink()

    base = add_ratios(rows)
    engine = next((r["engine"] for r in rows if "engine" in r), None)
    code = next((r["code"] for r in rows if r.get("code")), None)
    result = {"command": command, "machine": machine(), "repeats": args.repeats, "sizes": sizes, "scene": args.scene,
              "base_megapixels": base, "engine": engine, "code": code, "rows": rows, "targets": targets(rows),
              "stages": STAGES}
    md = markdown(result)
    print()
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "highres.json").write_text(json.dumps(result, indent=2))
        (args.out / "highres.md").write_text(md)
    return result


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
