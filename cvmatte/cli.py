"""The `cvmatte` command: thin shells around cvmatte.Matter and the zoo."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text
from rich.table import Table

from .engine import zoo
from .engine.errors import CvmatteError

app = typer.Typer(add_completion=False, no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]},
                  help="cvmatte: cut products out of photos (RGBA PNG with a soft alpha), fast.")
# soft_wrap: a log line is one line, also in a file or a pipe (Rich wraps at 80 columns there).
console = Console(stderr=True, soft_wrap=True)


def _version(value: bool):
    if value:
        from . import __version__

        typer.echo(f"cvmatte {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """cvmatte: cut products out of photos (RGBA PNG with a soft alpha), fast."""


def _fail(message: str) -> None:
    """An operator's mistake: one line, exit 2, before any model is loaded."""
    console.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def _check_out_dir(out: Path, option: str = "-o") -> None:
    if out.exists() and not out.is_dir():
        _fail(f"{option} {out}: is a file; give a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        _fail(f"{option} {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        _fail(f"{option} {out}: cannot write into {parent} (permission denied)")


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _check_runtime_choices(backend: str, device: str, precision: str = "auto") -> None:
    from .engine.backends import BACKENDS, DEVICES

    if backend != "auto" and backend not in BACKENDS:
        _fail(f"--backend {backend}: not one of auto, {', '.join(BACKENDS)}")
    if device not in DEVICES:
        _fail(f"--device {device}: not one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        _fail(f"--precision {precision}: not one of {', '.join(PRECISIONS)} (int8 is a model file: cvmatte export "
              "--precision int8)")


def _sku_resolver(regex: Optional[str], csv_path: Optional[Path]):
    from .engine.outputs import SkuResolver

    if regex is not None:
        try:
            re.compile(regex)
        except re.error as e:
            _fail(f"--sku-regex {regex!r}: not a regular expression ({e})")
    if csv_path is not None and not csv_path.is_file():
        _fail(f"--sku-csv {csv_path}: " + ("a folder, not a CSV file" if csv_path.is_dir() else "no such file"))
    try:
        return SkuResolver(regex, csv_path)
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"--sku-csv {csv_path}: cannot read ({e})")
    except ValueError as e:
        _fail(f"--sku-csv {csv_path}: {e}")


class _RateColumn(ProgressColumn):
    """Images/s since the start (Rich's own speed is over its last few updates: bursty finishes
    made it read thousands)."""

    def render(self, task) -> Text:
        return Text(f"{task.completed / task.elapsed:.2f} images/s" if task.completed and task.elapsed else "")


def _parse_canvas(text: Optional[str]) -> Optional[tuple[int, int]]:
    if not text:
        return None
    from .engine.outputs import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--canvas") from None


# The output vocabulary, the same in `matte` and `catalog run` (and the API, the service, the page).
ALPHA = typer.Option(False, "--alpha", help="Also write <stem>_alpha.png (8-bit alpha).")
BACKGROUND = typer.Option(None, "--background", help="Also write <stem>_background.jpg on: white, a colour (#f4f4f4, "
                          "#fff, rgb(1,2,3), ivory), gradient:TOP,BOTTOM or image:PATH.")
CANVAS = typer.Option(None, "--canvas", help="Background canvas WIDTHxHEIGHT: the product cropped, scaled to --fill "
                      "and centred (default: the photo's own size, nothing moved).")
FILL = typer.Option(0.8, "--fill", min=0.05, max=1.0, help="Share of the canvas the product fills.")
SHADOW = typer.Option(False, "--shadow", help="A soft contact shadow under the product on the background.")
# What runs the model, the same in `matte`, `catalog run` and `serve`.
MODEL_HELP = ("Zoo name (see `cvmatte models`) or an ONNX file with its spec JSON (default: " + zoo.DEFAULT_MODEL + " on a CPU, best on a GPU).")
BACKEND = typer.Option("auto", "--backend", help="auto (OpenVINO on a CPU, ONNX Runtime's CUDA provider on an NVIDIA "
                       "GPU, torch for .pt checkpoints), openvino, onnxruntime, torch or tensorrt.")
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda or tensorrt (NVIDIA), gpu or npu (Intel, through "
                      "OpenVINO). A GPU that cannot be used is an error, not a silent CPU run.")
PRECISION = typer.Option("auto", "--precision", help="auto (the fastest the model passed its accuracy gate in, "
                         "printed with the reason), fp32, bf16 (OpenVINO on CPUs with AVX-512 BF16 or AMX; torch "
                         "on CUDA or such CPUs) or fp16 (OpenVINO on Intel GPUs/NPUs; torch on CUDA).")
MAX_MEMORY = typer.Option(None, "--max-memory", min=1.0, help="Working memory for the images in flight, in MB: "
                          "fewer large images at once (one image always runs; 16 MP takes about 1 GB).")


def _output_spec(alpha: bool, background: Optional[str], canvas: Optional[str], fill: float, shadow: bool,
                 white_bg: bool = False, margin: Optional[float] = None):
    from .engine.outputs import OutputSpec

    try:
        return OutputSpec.with_aliases(white_bg, margin, alpha=alpha, background=background,
                                       canvas=_parse_canvas(canvas), fill=fill, shadow=shadow)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--background/--canvas/--fill") from None


def _spec_kwargs(spec) -> dict:
    return dict(alpha=spec.alpha, background=spec.background, canvas=spec.canvas, fill=spec.fill, shadow=spec.shadow)


def _report_row(progress, task, quiet: bool):
    """Failures always said (naming the file); review flags unless quiet."""
    def on_row(r):
        if progress is not None:
            progress.advance(task)
        out = progress.console if progress is not None else console
        if not r.ok:
            out.print(f"[red]{r.status}:[/] {escape(r.error or '')}", highlight=False)
        elif r.status == "review" and not quiet:
            out.print(f"[yellow]review:[/] {r.input}: {'; '.join(r.flags)}", highlight=False)

    return on_row


def _progress(quiet: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=quiet)


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd, Kubernetes, `timeout`): ends a run as Ctrl-C does, with exit status 143."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _interrupted(err: BaseException | None = None) -> None:
    console.print("interrupted: the outputs and manifest rows written so far are kept (catalogs: --resume "
                  "finishes the run)")
    raise typer.Exit(143 if isinstance(err, Terminated) else 130)


def _print_summary(report, out: Path) -> None:
    s = report.summary
    if s.get("skipped"):
        names = ", ".join(Path(p).name for p in s["skipped"][:5]) + (", ..." if len(s["skipped"]) > 5 else "")
        console.print(f"[yellow]skipped:[/] {len(s['skipped'])} file(s) in the input folders that are not images "
                      f"cvmatte reads (.jpg .png .webp .bmp .tif) or not regular files: {escape(names)}")
    n_ok = len(report.succeeded)
    review = s["counts"].get("review", 0)
    console.print(f"done: {n_ok} ok, {len(report.failed)} failed ({review} to review) in {report.seconds:.1f} s "
                  f"({s['images_per_s']:.2f} images/s); {s['model_runs']} model runs, "
                  f"{s['cache_hits']} from the cache", highlight=False)
    console.print(f"manifest {report.manifest}", highlight=False)
    if report.batching is not None:
        console.print(f"coarse pass: {report.batching.summary()}", highlight=False)
    if report.succeeded:
        first = Path(next(iter(report.succeeded[0].outputs.values()), out))
        console.print(f"outputs under {first.parent.parent}", highlight=False)


@app.command()
def matte(
    inputs: List[str] = typer.Argument(..., help="Image files, folders (searched recursively) or glob patterns; - reads "
                                       "one image from stdin."),
    out: Path = typer.Option(Path("outputs"), "-o", "--out", help="Output root: OUT/YYYYMMDD/HHMMSS_<SKU>/<stem>_matte.png; "
                             "with one input, a file name ending in .png (or .jpg with --background) is written exactly "
                             "there, and - writes to stdout."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    backend: str = BACKEND,
    precision: str = PRECISION,
    cuda_graphs: bool = typer.Option(False, "--cuda-graphs", help="torch backend on CUDA: launch each batch as one CUDA graph."),
    compile_model: bool = typer.Option(False, "--compile", help="torch backend: torch.compile the model, once per "
                                       "input shape (its compile time is reported)."),
    device: str = DEVICE,
    allow_cpu_fallback: bool = typer.Option(False, "--allow-cpu-fallback", help="Run on the CPU (and say so) when the GPU device cannot be used."),
    tile: bool = typer.Option(True, "--tile/--no-tile", help="Refine the object's edge at full resolution in tiles."),
    refiner: str = typer.Option("guided", "--refiner", help="What refines the tiles: guided (model-free guided filter) "
                                "or a learned refiner's zoo name / ONNX file (e.g. cvunet-refiner)."),
    despill: float = typer.Option(1.0, "--despill", min=0.0, max=1.0, help="Remove the old background's colour from soft edges (0 = off)."),
    alpha: bool = ALPHA,
    only_alpha: bool = typer.Option(False, "--only-alpha", help="Write only the alpha (8-bit PNG), no cut-out."),
    background: Optional[str] = BACKGROUND,
    canvas: Optional[str] = CANVAS,
    fill: float = FILL,
    shadow: bool = SHADOW,
    white_bg: bool = typer.Option(False, "--white-bg", help="Alias of --background white (kept for one release)."),
    margin: Optional[float] = typer.Option(None, "--margin", min=0.0, max=0.45,
                                           help="Alias of --fill 1-2*MARGIN (kept for one release)."),
    sku_regex: Optional[str] = typer.Option(None, "--sku-regex", help="Regex on the file name; its group 'sku' or group 1 is the SKU."),
    sku_csv: Optional[Path] = typer.Option(None, "--sku-csv", help="CSV of file name,SKU."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Model threads (default: all cores)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per model batch (default: 1 on a CPU, 8 on a GPU)."),
    flush_ms: float = typer.Option(5.0, "--flush-ms", min=0.0, help="Longest wait of a part-filled batch for more images."),
    max_megapixels: float = typer.Option(64.0, "--max-megapixels", min=0.01, help="Refuse larger images."),
    max_memory: Optional[float] = MAX_MEMORY,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Cut out every image: RGBA PNG at the original resolution, plus optional alpha and background JPEG.
    The same per-image path as `catalog run`, into a dated folder of its own and without a cache."""
    from .api import Matter
    from .engine.imageio import list_images

    spec = _output_spec(alpha or only_alpha, background, canvas, fill, shadow, white_bg, margin)
    if only_alpha:
        spec = dataclasses.replace(spec, rgba=False)
    single = str(out) == "-" or out.suffix.lower() in (".png", ".jpg", ".jpeg")
    _check_runtime_choices(backend, device, precision)
    if single:
        return _matte_one(inputs, out, spec, only_alpha,
                          dict(model=model, backend=backend, device=device, threads=threads,
                               allow_cpu_fallback=allow_cpu_fallback, refiner=refiner, precision=precision,
                               cuda_graphs=cuda_graphs, compile=compile_model, tile=tile, despill=despill,
                               max_pixels=int(max_megapixels * 1e6)))
    if "-" in inputs:
        _fail("- (stdin) takes -o FILE.png or -o - (stdout)")
    _check_out_dir(out)
    _sku_resolver(sku_regex, sku_csv)
    try:
        paths = list_images(inputs, exclude=[out])
    except FileNotFoundError as e:
        _fail(str(e))
    if not paths:
        _fail("no images found in " + ", ".join(inputs))
    try:
        m = Matter(model, backend, device, threads=threads, allow_cpu_fallback=allow_cpu_fallback, refiner=refiner,
                   precision=precision, cuda_graphs=cuda_graphs, compile=compile_model, tile=tile, despill=despill,
                   flush_ms=flush_ms, max_pixels=int(max_megapixels * 1e6), max_memory_mb=max_memory,
                   **({"batch_size": batch_size} if batch_size else {}))
    except CvmatteError as e:
        _fail(str(e))
    console.print(f"cvmatte: {len(paths)} image(s), {escape(m.describe())}", highlight=False)
    if m.backend.fell_back:
        console.print("[yellow]warning:[/] running on the CPU: the requested GPU device could not be used")
    try:
        with m, _progress(quiet) as progress:
            task = progress.add_task("matting", total=len(paths))
            report = m.matte_files(inputs, out, rgba=spec.rgba, **_spec_kwargs(spec), sku_regex=sku_regex,
                                   sku_csv=sku_csv, on_row=_report_row(progress, task, quiet))
    except KeyboardInterrupt as err:
        _interrupted(err)
    except CvmatteError as e:
        _fail(str(e))
    _print_summary(report, out)
    raise typer.Exit(1 if report.failed else 0)


def _matte_one(inputs: list[str], out: Path, spec, only_alpha: bool, matter_kwargs: dict) -> None:
    """One image to exactly one file (or stdout), through the same per-image path as a run."""
    from .api import Matter
    from .engine.imageio import atomic_write_bytes, read_bytes
    from .engine.outputs import KINDS

    if len(inputs) != 1 or (inputs[0] != "-" and not Path(inputs[0]).is_file()):
        _fail(f"-o {out} writes one file: give exactly one input image (or - for stdin)")
    kind = "alpha" if only_alpha else "background" if out.suffix.lower() in (".jpg", ".jpeg") else "rgba"
    if kind == "background" and spec.background is None:
        spec = dataclasses.replace(spec, background="white")
    spec = dataclasses.replace(spec, rgba=kind == "rgba", alpha=kind == "alpha",
                               background=spec.background if kind == "background" else None)
    if str(out) != "-":
        if out.is_dir():
            _fail(f"-o {out}: is a folder; give a file name, or a folder name without the .png/.jpg")
        _check_out_dir(out.parent if str(out.parent) else Path("."), "-o")
    name = "stdin" if inputs[0] == "-" else inputs[0]
    try:
        data = sys.stdin.buffer.read() if inputs[0] == "-" else read_bytes(inputs[0])
        with Matter(**matter_kwargs) as m:
            row, encoded = m.matte_bytes(data, name, spec)
    except KeyboardInterrupt as err:
        _interrupted(err)
    except CvmatteError as e:
        _fail(str(e))
    if not row.ok:
        console.print(f"[red]failed:[/] {escape(row.error or '')}")
        raise typer.Exit(1)
    if str(out) == "-":
        sys.stdout.buffer.write(encoded[kind])
        sys.stdout.buffer.flush()
    else:
        atomic_write_bytes(out, encoded[kind])
        console.print(f"wrote {out} ({KINDS[kind].media_type}){'; review: ' + '; '.join(row.flags) if row.flags else ''}",
                      highlight=False)
    raise typer.Exit(0)


@app.command()
def models(
    fetch: Optional[str] = typer.Option(None, "--fetch", help="Download and verify this zoo model into the cache now."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Cache folder (default $CVMATTE_CACHE or ~/.cache/cvmatte)."),
    from_file: Optional[Path] = typer.Option(None, "--from", help="With --fetch: install from this file downloaded "
                                             "elsewhere (isnet-general-use: the npm tarball), verified the same way."),
):
    """List the model zoo and what is cached."""
    if from_file and not fetch:
        console.print("[red]error:[/] --from needs --fetch NAME")
        raise typer.Exit(2)
    if fetch:
        from . import export as _toolchain  # noqa: F401  registers its converters with the zoo (cv-unet-universal)

        try:
            resolved = zoo.install_from(fetch, from_file, cache) if from_file else zoo.resolve(fetch, cache)
        except CvmatteError as e:
            console.print(f"[red]error:[/] {escape(str(e))}")
            raise typer.Exit(2)
        console.print(f"{fetch}: {resolved.path} (sha256 {resolved.spec.sha256[:12]}...)")
    table = Table(title=f"cvmatte models (cache: {zoo.cache_dir(cache)})")
    table.add_column("name", no_wrap=True)
    for col in ("input", "cached", "source", "what"):
        table.add_column(col)
    for entry in zoo.ZOO.values():
        hit = zoo.cached(entry.name, cache)
        size = "x".join(map(str, hit.spec.input_size)) if hit else "-"
        mb = f"yes, {hit.path.stat().st_size / 1e6:.1f} MB" if hit else "no"
        default = " (CPU default)" if entry.name == zoo.DEFAULT_MODEL else ""
        table.add_row(entry.name + default, size, mb, entry.source, entry.description)
    for name, path in zoo.COMBINED.items():
        spec = zoo.ModelSpec.load(path)
        members = spec.extra.get("members", [])
        ready = all(zoo.cached(m, cache) for m in members)
        default = " (GPU default)" if name == zoo.GPU_DEFAULT_MODEL else ""
        table.add_row(name + default, "x".join(map(str, spec.input_size)), "members yes" if ready else "members no",
                      f"combined: {' + '.join(members)} ({spec.extra.get('rule')})", spec.notes)
    Console().print(table)
    _print_presets()


def _print_presets():
    """The CV-UNet student presets (torch is needed to build them; the runtime does without)."""
    try:
        from .engine.nets.cvunet import PRESETS, build, count_flops, count_parameters
    except ImportError:
        Console().print(escape("CV-UNet presets: install torch to list them (pip install 'cvmatte[torch]')"))
        return
    table = Table(title="CV-UNet student presets")
    for col in ("preset", "encoder", "width", "parameters", "GFLOP at 512x512"):
        table.add_column(col, no_wrap=True)
    for name, cfg in PRESETS.items():
        model = build(name)
        table.add_row(name, cfg.encoder, f"{cfg.width:g}", f"{count_parameters(model) / 1e6:.2f} M",
                      f"{count_flops(model) / 1e9:.1f}")
    Console().print(table)


@app.command()
def export(
    model: str = typer.Argument(..., help="Zoo name, ONNX file (with its spec JSON), CV-UNet checkpoint (.pt) or ModelScope tf_graph.pb."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: <name>.<precision>.onnx, specs, parity.json, BUILD.md."),
    precision: str = typer.Option("fp32", "--precision", help="Comma-separated: fp32, fp16, int8 (ONNX files); with "
                                  "--backend openvino also bf16 (fp16/bf16 are then accuracy gates written into the "
                                  "spec, int8 an NNCF OpenVINO IR file)."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of real images for INT8 calibration and parity."),
    trt: bool = typer.Option(False, "--trt", help="Also build TensorRT engines (needs tensorrt and a GPU)."),
    export_backend: str = typer.Option("onnxruntime", "--backend", help="onnxruntime (ONNX files for ONNX Runtime and "
                                       "TensorRT) or openvino (gates for --precision auto; NNCF INT8)."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="Folder of images with exact alpha (<stem>.alpha.png "
                                         "beside): the gates also bound SAD against it (within 2% of fp32)."),
    photos: Optional[Path] = typer.Option(None, "--photos", help="Folder of real photos for the parity report "
                                          "(default: 16 of --calib, or the demo photos)."),
):
    """Convert a model to ONNX FP32/FP16/INT8 (and TensorRT), checking parity at every step."""
    try:
        from .export.convert import export as run_export
    except ImportError as e:
        _fail(f"the export toolchain needs its extra ({e}): pip install 'cvmatte[export]'")

    precisions = [p.strip() for p in precision.split(",") if p.strip()]
    try:
        report = run_export(model, out, precisions, calib, trt=trt, log=lambda msg: console.print(msg, markup=False),
                            backend=export_backend, truth_dir=truth, parity_images=photos)
    except (CvmatteError, ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2)
    console.print(f"wrote {', '.join(str(p) for p in report.files.values())}; parity {'passed' if report.passed else 'FAILED'}",
                  markup=False)
    for precision, why in report.skipped.items():
        console.print(f"not written: {precision} ({why})", markup=False)
    raise typer.Exit(0 if report.passed and not report.skipped else 1)


@app.command()
def distill(
    teacher: str = typer.Option(zoo.DEFAULT_MODEL, "--teacher", help="Zoo name or ONNX file of the teacher."),
    student: str = typer.Option("cvunet-s", "--student", help="CV-UNet preset (see `cvmatte models`; random weights), "
                                "or a model whose weights to start from (zoo name such as u2netp, .onnx, .pt)."),
    name: Optional[str] = typer.Option(None, "--name", help="The trained model's name (default: the preset, or "
                                       "<student>-distilled)."),
    prune: Optional[float] = typer.Option(None, "--prune", min=0.01, max=0.99,
                                          help="Prune the starting model to this share of its FLOPs first (e.g. 0.33)."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (from scratch 2e-3; trained U²-Net-p weights 3e-5: BN-folded, they break at 1e-4)."),
    data: List[Path] = typer.Option(..., "--data", help="Folder(s) of photos; the teacher labels them, except those "
                                    "with an X.alpha.png beside them (ground truth)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder: checkpoints, labels, metrics, the exported ONNX."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1),
    minutes: Optional[float] = typer.Option(None, "--minutes", min=0.1),
    size: int = typer.Option(320, "--size", help="Training crop size (multiple of 32)."),
    infer_size: Optional[int] = typer.Option(None, "--infer-size",
                                             help="The student's input size in its spec and evaluation (default: --size)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    eval_every: int = typer.Option(50, "--eval-every", min=1),
    synthetic: int = typer.Option(0, "--synthetic", min=0, help="Procedural composites with exact alpha added (textured "
                                  "with the demo photos, which evaluations hold out)."),
    whole_share: float = typer.Option(0.5, "--whole-share", min=0.0, max=1.0,
                                      help="Share of samples seen whole (stretched, as the coarse pass sees them), not cropped."),
    photo_share: float = typer.Option(0.5, "--photo-share", min=0.0, max=1.0,
                                      help="Share of each batch drawn from the teacher-labelled photos."),
    deep_supervision: bool = typer.Option(False, "--deep-supervision", help="U²-Net-p students: add its BCE on the fused "
                                          "and side logits (off: it hurt the product fine-tune)."),
    select: str = typer.Option("best", "--select", help="Export the best held-out checkpoint, or the last (fine-tunes)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    amp: str = typer.Option("auto", "--amp", help="Mixed precision: auto (fp16 on cuda, off on the CPU), off, fp16 "
                            "(cuda) or bf16 (cuda, or CPUs with AVX-512 BF16/AMX: 2.8x faster steps measured, held-out "
                            "quality not yet shown equal)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN/last.pt."),
):
    """Distil a teacher into a student (a CV-UNet, or a fine-tuned or pruned copy of a trained model),
    resumable, exported to ONNX at the end."""
    try:
        from .distill.trainer import DistillConfig, distill as run_distill
    except ImportError as e:
        console.print(f"[red]error:[/] " + escape(f"distillation needs torch ({e}): pip install 'cvmatte[torch]'"))
        raise typer.Exit(2)
    try:
        cfg = DistillConfig(teacher=teacher, student=student, name=name, prune=prune, data=[str(d) for d in data],
                            out=str(out), steps=steps, minutes=minutes, size=size, infer_size=infer_size,
                            batch_size=batch_size, lr=lr, eval_every=eval_every, synthetic=synthetic,
                            photo_share=photo_share, whole_share=whole_share, deep_supervision=deep_supervision,
                            select=select, seed=seed, device=device, amp=amp)
        result = run_distill(cfg, resume=resume, log=lambda m: console.print(m))
    except (CvmatteError, ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2)
    console.print(f"done at step {result['step']}: {result['onnx']}")


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="One model in FP32 at its own size, small sets: under two minutes on a 2-core CPU."),
    models: Optional[List[str]] = typer.Option(None, "--models", help="Zoo names or ONNX files (default: u2netp, plus cvunet-s when packaged)."),
    backends: Optional[List[str]] = typer.Option(None, "--backends", help="Inference backends (default: onnxruntime)."),
    devices: Optional[List[str]] = typer.Option(None, "--devices", help="Devices to time on: cpu, cuda, tensorrt (default: cpu)."),
    precisions: Optional[List[str]] = typer.Option(None, "--precisions", help="fp32, fp16, int8 (default: all three; --quick: fp32)."),
    resolutions: Optional[List[int]] = typer.Option(None, "--resolutions", help="Input sides timed at batch 1 (default: 320 512 768)."),
    batches: Optional[List[int]] = typer.Option(None, "--batches", help="Batch sizes timed at the model's own size (default: 1 2 4 8)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=3, help="Timed runs per latency figure (default 10; --quick 8)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results folder (default: ./bench-results/<machine>/ under the current directory; the committed results: --out benchmarks/results/<machine>)."),
):
    """Latency, catalog throughput and accuracy side by side with the rembg-style loop; JSON, markdown and plots."""
    from .benchmarks.suite import BenchConfig, run as run_bench

    if not models:
        models = ["u2netp"] + (["cvunet-s"] if "cvunet-s" in zoo.ZOO else [])
    overrides = dict(models=list(models), backends=backends or None, devices=devices or None,
                     precisions=precisions or None, resolutions=resolutions or None, batches=batches or None,
                     repeats=repeats, out=out)
    cfg = BenchConfig.quick_config(**overrides) if quick else \
        BenchConfig(**{k: v for k, v in overrides.items() if v is not None})
    try:
        report = run_bench(cfg, log=lambda m: console.print(m))
    except CvmatteError as e:
        console.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2)
    typer.echo(Path(report["files"][1]).read_text())


@app.command()
def samples(dest: Path = typer.Argument(Path("demo"), help="Folder to write the demo photos into.")):
    """Write the demo photos (real photos bundled with scikit-image) into a folder."""
    from .samples import write_demo_photos

    _check_out_dir(dest, "DEST")
    try:
        written = write_demo_photos(dest)
    except RuntimeError as e:
        console.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2)
    console.print(f"wrote {len(written)} photos to {dest}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 opens it to the network."),
    port: int = typer.Option(8000, "--port"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    backend: str = BACKEND,
    device: str = DEVICE,
    precision: str = PRECISION,
    allow_cpu_fallback: bool = typer.Option(False, "--allow-cpu-fallback"),
    workers: int = typer.Option(1, "--workers", min=1, help="Images matted at once."),
    queue: int = typer.Option(8, "--queue", min=0, help="Requests that may wait; past that, 503."),
    max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", min=0.01),
    max_megapixels: float = typer.Option(40.0, "--max-megapixels", min=0.01),
    upload_timeout: float = typer.Option(30.0, "--upload-timeout", min=0.1, help="Seconds an image upload may "
                                         "take; a client that stalls longer gets 408."),
):
    """The model loaded once: HTTP API (/v1/matte, /v1/batch, /v1/jobs, /health, /openapi.json) and a web page at /."""
    from .server import serve as run_server

    _check_runtime_choices(backend, device, precision)
    console.print(f"cvmatte serve: loading {model or 'the default model'}; then http://{host}:{port}/ (API: /openapi.json)")
    try:
        run_server(host, port, model=model, backend=backend, device=device, precision=precision,
                   allow_cpu_fallback=allow_cpu_fallback, workers=workers, queue=queue, max_upload_mb=max_upload_mb, max_megapixels=max_megapixels,
                   upload_deadline_s=upload_timeout)
    except CvmatteError as e:
        console.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2)


catalog_app = typer.Typer(no_args_is_help=True, help="The catalog pipeline: validate, matte, flag, resume, scale out.")
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("run")
def catalog_run(
    inputs: List[str] = typer.Argument(..., help="Folders, files or glob patterns of the catalog."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: OUT/<SKU>/<stem>_matte.png, OUT/manifest.jsonl."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    backend: str = BACKEND,
    device: str = DEVICE,
    precision: str = PRECISION,
    allow_cpu_fallback: bool = typer.Option(False, "--allow-cpu-fallback"),
    refiner: str = typer.Option("guided", "--refiner", help="guided or a learned refiner (cvunet-refiner)."),
    resume: bool = typer.Option(False, "--resume", help="Finish the last run: images it finished are not redone."),
    retry_failed: bool = typer.Option(True, "--retry-failed/--no-retry-failed",
                                      help="--resume: try the last run's failed images again."),
    watch: bool = typer.Option(False, "--watch", help="Keep watching the input folder and process new files as they arrive."),
    poll: float = typer.Option(2.0, "--poll", min=0.1, help="--watch: seconds a new file must stay unchanged before it is taken."),
    idle_exit: Optional[float] = typer.Option(None, "--idle-exit", help="--watch: stop after this many seconds with nothing new."),
    ray: bool = typer.Option(False, "--ray", help="Run the images on Ray Data actors (a local cluster unless --ray-address)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="A running Ray cluster: auto or ray://HOST:10001."),
    ray_actors: Optional[int] = typer.Option(None, "--ray-actors", min=1, help="Model actors (default: one per CPU, or per GPU slot)."),
    ray_gpus: float = typer.Option(0.0, "--ray-gpus", min=0.0, help="GPUs per model actor (1, or 0.5 for two actors a GPU)."),
    alpha: bool = ALPHA,
    background: Optional[str] = BACKGROUND,
    canvas: Optional[str] = CANVAS,
    fill: float = FILL,
    shadow: bool = SHADOW,
    template: Optional[str] = typer.Option(None, "--template", help="Alias of --background (kept for one release)."),
    thresholds: Optional[Path] = typer.Option(None, "--thresholds", help="JSON file of quality thresholds (see cvmatte.engine.quality)."),
    sku_regex: Optional[str] = typer.Option(None, "--sku-regex"),
    sku_csv: Optional[Path] = typer.Option(None, "--sku-csv"),
    min_side: int = typer.Option(32, "--min-side", min=1, help="Refuse images smaller than this on a side."),
    workers: int = typer.Option(2, "--workers", min=1, help="Threads decoding, refining and writing on this machine."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Default: 1 on a CPU, 8 on a GPU."),
    max_megapixels: float = typer.Option(64.0, "--max-megapixels", min=0.01),
    max_memory: Optional[float] = MAX_MEMORY,
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Matte a whole catalog: manifest, quality flags, review list, cache; resumable."""
    import json as _json

    from . import Matter
    from .engine.quality import QualityThresholds

    spec = _output_spec(alpha, background or template, canvas, fill, shadow)
    _check_out_dir(out)
    _check_runtime_choices(backend, device, precision)
    _sku_resolver(sku_regex, sku_csv)
    if watch and (len(inputs) != 1 or not Path(inputs[0]).is_dir()):
        _fail("--watch takes one input folder")
    for item in inputs:
        if not Path(item).exists() and not any(c in item for c in "*?["):
            _fail(f"{item}: no such file, folder or matching pattern")
    try:
        limits = QualityThresholds.from_dict(_json.loads(thresholds.read_text())) if thresholds else None
    except (ValueError, OSError) as e:
        _fail(f"--thresholds {thresholds}: {e}")
    try:
        m = Matter(model, backend, device, allow_cpu_fallback=allow_cpu_fallback, refiner=refiner, precision=precision,
                   max_pixels=int(max_megapixels * 1e6), max_memory_mb=max_memory,
                   **({"batch_size": batch_size} if batch_size else {}))
    except CvmatteError as e:
        _fail(str(e))
    console.print(f"cvmatte catalog: {escape(m.describe())}{', on Ray' if ray else ''}", highlight=False)
    try:
        with m, _progress(quiet or watch) as progress:
            task = progress.add_task("catalog", total=None)
            options = dict(rgba=spec.rgba, **_spec_kwargs(spec), thresholds=limits, sku_regex=sku_regex,
                           sku_csv=sku_csv, min_side=min_side, workers=workers,
                           on_row=_report_row(progress, task, quiet))
            if watch:
                console.print(f"watching {inputs[0]} (Ctrl-C stops)")
                try:
                    m.watch(inputs[0], out, settle_s=poll, idle_exit_s=idle_exit, **options)
                except KeyboardInterrupt as err:
                    raise typer.Exit(143 if isinstance(err, Terminated) else 0)
                raise typer.Exit(0)
            report = m.catalog(inputs, out, resume=resume, retry_failed=retry_failed, ray=ray, ray_address=ray_address,
                               ray_actors=ray_actors, ray_gpus_per_actor=ray_gpus,
                               on_start=lambda n: progress.update(task, total=n), **options)
    except KeyboardInterrupt as err:
        _interrupted(err)
    except (FileNotFoundError, CvmatteError) as e:
        _fail(str(e))
    _print_summary(report, out)
    raise typer.Exit(1 if report.failed else 0)


def main():
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)  # the service's server installs its own on start
    app()


if __name__ == "__main__":
    sys.exit(main())
