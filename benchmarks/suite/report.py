"""The report's files, nothing measured here: `<name>.json` with every row and the machine, the
markdown tables (`<name>.md`: machine and measured peak, latency, catalog throughput, accuracy
means, the ModelScope peer's note) and two PNG plots with matplotlib (latency against resolution,
model throughput against batch), all under the results folder; without matplotlib the plots are
skipped and the log says so.
"""

from __future__ import annotations

import json
from pathlib import Path


def markdown(report: dict) -> str:
    m, peak = report["machine"], report["peak"]
    lines = [f"# cvmatte bench{' --quick' if report['config']['quick'] else ''}: {report['slug']}", "",
             f"{m['cpu']} ({m.get('isa', '?')}), {m['cores']} cores, {m['memory_gib']} GiB; GPU: {m['gpu'] or 'none'}; "
             f"{m['platform']}; {m['date']}", "",
             f"Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}", "",
             f"Measured peak: {peak['cpu_gflops']:.0f} GFLOP/s (float32 matrix product), "
             f"{peak['cpu_gbs']:.1f} GB/s (copy)" + (
                 f"; GPU {peak['gpu_fp32_gflops'] / 1e3:.1f} TFLOP/s FP32, {peak['gpu_fp16_gflops'] / 1e3:.1f} TFLOP/s "
                 f"FP16, {peak['gpu_gbs']:.0f} GB/s device copy, {peak['h2d_gbs']:.1f} GB/s pinned upload"
                 if "gpu_fp32_gflops" in peak else ""), "",
             "## Latency", "",
             "| model | device | precision | resolution | batch | median ms | p90 ms | p99 ms | compute ms | ms/image | "
             "GFLOP/image | GFLOP/s | of peak |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["latency"]:
        lines.append(f"| {r['model']} | {r['device']} | {r['precision']} | {r['resolution']} | {r['batch']} | "
                     f"{r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r.get('compute_ms', float('nan')):.1f} | "
                     f"{r['ms_per_image']:.1f} | {r['gflop_per_image']:.2f} | "
                     f"{r['gflops_achieved']:.1f} | {r['fraction_of_peak']:.0%} |")
    t = report["throughput"]
    lines += ["", f"## Catalog throughput ({t[0]['images'] if t else 0} images, "
              f"{t[0]['megapixels'] if t else 0:.1f} MP, decode -> matte -> encode -> write)", "",
              "| configuration | images/s | MP/s | CPU utilisation | model busy | batch fill | GPU utilisation | "
              "peak RSS MiB (process) | RSS growth in the run MiB |", "|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
    for r in t:
        lines.append(f"| {r['config']} | {r['images_per_s']:.2f} | {r['mp_per_s']:.2f} | {r['cpu_util']:.0%} | "
                     f"{pct(r.get('model_busy'))} | {pct(r.get('batch_fill'))} | {pct(r.get('gpu_util'))} | "
                     f"{r['peak_rss_mib']:.0f} | {r['rss_growth_mib']:.0f} |")
    lines += ["", "## Accuracy against exact alpha (synthetic product shots; means over scenes)", "",
              "| MP | configuration | SAD | MSE ×1e3 | gradient | connectivity | s/image |", "|---|---|---|---|---|---|---|"]
    for r in report["accuracy_summary"]:
        lines.append(f"| {r['megapixels']:g} | {r['config']} | {r['sad']:.2f} | {r['mse'] * 1e3:.2f} | {r['grad']:.2f} | "
                     f"{r['conn']:.2f} | {r['seconds']:.2f} |")
    lines += ["", f"ModelScope whole-graph pipeline: {report['modelscope']}", ""]
    return "\n".join(lines)


def plots(report: dict, out: Path, prefix: str, log=print) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plots skipped: matplotlib is not installed (pip install 'cvmatte[bench]')")
        return []
    lat = report["latency"]
    by_resolution = {" ".join(key): sorted((r for r in lat if (r["model"], r["precision"]) == key and r["batch"] == 1),
                                           key=lambda r: r["resolution"])
                     for key in sorted({(r["model"], r["precision"]) for r in lat})}
    by_batch = {f"{k[0]} {k[1]} {k[2]}²": sorted((r for r in lat if (r["model"], r["precision"], r["resolution"]) == k),
                                                 key=lambda r: r["batch"])
                for k in sorted({(r["model"], r["precision"], r["resolution"]) for r in lat})}
    by_batch = {k: v for k, v in by_batch.items() if len(v) > 1}  # sizes timed at batch 1 only are the other plot
    figures = [("latency_vs_resolution", by_resolution, "resolution", "median_ms", "input side (px)",
                "median latency, batch 1 (ms)", "Latency against resolution"),
               ("throughput_vs_batch", by_batch, "batch", "images_per_s", "batch", "images/s (model only)",
                "Throughput against batch")]
    written = []
    for name, series, x, y, xlabel, ylabel, title in figures:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, rows in series.items():
            ax.plot([r[x] for r in rows], [r[y] for r in rows], "o-", label=label)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.set_ylim(bottom=0)
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(out / f"{prefix}_{name}.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def write(report: dict, out: Path, name: str, log=print) -> list[str]:
    """Writes <name>.json, <name>.md and the plots into `out`; returns their paths."""
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    (out / f"{name}.md").write_text(markdown(report))
    return [str(out / f"{name}.json"), str(out / f"{name}.md")] + [str(p) for p in plots(report, out, name, log)]
