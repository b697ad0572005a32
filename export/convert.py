"""`cvmatte export`: a model in, ONNX files per precision, parity report and an edge bundle out.

Steps, each checked for parity on real images against the previous one and against FP32:
source -> ONNX FP32 (cleaned) -> FP16 -> INT8 (Q/DQ, calibrated) -> TensorRT engines (when asked).
Writes DIR/<name>.<precision>.onnx with <name>.<precision>.json beside each, DIR/parity.json and
DIR/BUILD.md (the commands that build engines on the target device).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cvmatte.engine import zoo
from cvmatte.engine.errors import ModelError
from cvmatte.engine.spec import ResolvedModel, spec_path_for

from . import parity
from .onnx_passes import calibration_images, clean, to_fp16, to_int8

PRECISIONS = ("fp32", "fp16", "int8")
#: --backend openvino: bf16 and fp16 are inference precisions (a gate, no file); int8 an NNCF IR file.
OPENVINO_PRECISIONS = ("fp32", "bf16", "fp16", "int8")


@dataclass
class ExportReport:
    files: dict[str, Path] = field(default_factory=dict)
    parity: list[dict] = field(default_factory=list)
    #: precision -> why no file of it was written (e.g. INT8 that cannot meet its tolerance).
    skipped: dict[str, str] = field(default_factory=dict)
    #: --backend openvino: precision -> its accuracy gate (written into the fp32 file's spec).
    gates: dict[str, dict] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(row["passed"] for row in self.parity)


def _source(model: str | Path, out_dir: Path, log) -> tuple[ResolvedModel, list[dict]]:
    """The FP32 ONNX to start from, and the parity rows of its own conversion."""
    path = Path(model)
    if path.suffix == ".pb":
        from .tf_graph import convert_tf_graph

        log(f"converting TensorFlow graph {path} with tf2onnx")
        converted = convert_tf_graph(path, out_dir / "source")
        return ResolvedModel(converted.core, converted.spec), []
    if path.suffix in (".pt", ".pth"):
        from .torch_export import export_checkpoint

        log(f"exporting torch checkpoint {path}")
        spec = export_checkpoint(path, out_dir / "source")
        return ResolvedModel(out_dir / "source" / f"{spec.name}.onnx", spec), []
    return zoo.resolve(model), []


def export(model: str | Path, out_dir: str | Path, precisions=("fp32",), calib_dir: str | Path | None = None,
           parity_images: list[Path] | Path | None = None, trt: bool = False, log=print, backend: str = "onnxruntime",
           truth_dir: str | Path | None = None) -> ExportReport:
    """backend "onnxruntime": ONNX files per precision (FP16, INT8 Q/DQ) for ONNX Runtime and
    TensorRT. backend "openvino": bf16/fp16 accuracy gates recorded in the fp32 file's spec, and
    INT8 by NNCF as OpenVINO IR. truth_dir: images with exact alpha for the gates."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    allowed = OPENVINO_PRECISIONS if backend == "openvino" else PRECISIONS
    if backend not in ("onnxruntime", "openvino"):
        raise ValueError(f"export --backend is onnxruntime or openvino; got {backend!r}")
    unknown = set(precisions) - set(allowed)
    if unknown:
        raise ValueError(f"unknown precision(s) {sorted(unknown)} for --backend {backend}; choose from {', '.join(allowed)}")
    source, rows = _source(model, out_dir, log)
    name = source.spec.name
    report = ExportReport(parity=rows)
    if source.spec.precision != "fp32":
        # Already converted (a bundle's FP16 or INT8 file): only engines are left to build.
        report.files[source.spec.precision] = source.path
        return _finish(out_dir, report, trt, log)
    if parity_images is None:
        parity_images = calibration_images(Path(calib_dir), limit=16) if calib_dir else _demo_images(out_dir)
    elif not isinstance(parity_images, list):  # a folder of real photos
        parity_images = calibration_images(Path(parity_images), limit=100)
    images = parity.load_images(parity_images)
    log(f"parity on {len(images)} real images")

    fp32_path = out_dir / f"{name}.fp32.onnx"
    fp32 = ResolvedModel(fp32_path, clean(source.path, fp32_path, source.spec))
    report.files["fp32"] = fp32_path
    ref = parity.onnx_alphas(fp32, images)
    report.parity.append(parity.judge("fp32 (cleaned)", "source", parity.compare(parity.onnx_alphas(source, images), ref),
                                      parity.TOLERANCES["fp32"]))
    if backend == "openvino":
        return _finish(out_dir, _openvino(fp32, precisions, calib_dir, parity_images, images, truth_dir, report, log),
                       trt, log)
    # FP16 and INT8 are each made from the cleaned FP32 file: that is their previous step.
    for precision in ("fp16", "int8"):
        if precision not in precisions:
            continue
        path = out_dir / f"{name}.{precision}.onnx"
        if precision == "fp16":
            spec = to_fp16(fp32_path, path, fp32.spec)
        else:
            calib = calibration_images(Path(calib_dir)) if calib_dir else parity_images
            log(f"calibrating INT8 on {len(calib)} images")
            try:
                spec = to_int8(fp32_path, path, fp32.spec, calib, images, parity.TOLERANCES["int8"], log=log)
            except ModelError as e:
                report.skipped["int8"] = str(e)
                passing = [r["step"].split()[0] for r in report.parity if r["passed"]]
                best = "fp16" if "fp16" in passing else "fp32" if "fp32" in passing else None
                log(f"INT8 not written: {e}. " + (f"The best file that passes parity is {report.files[best].name}"
                                                  if best else "No file of this export passes parity"))
                continue
        report.files[precision] = path
        alphas = parity.onnx_alphas(ResolvedModel(path, spec), images)
        tol = parity.TOLERANCES[precision]
        report.parity.append(parity.judge(precision, "fp32", parity.compare(ref, alphas), tol))
    return _finish(out_dir, report, trt, log)


def _openvino(fp32: ResolvedModel, precisions, calib_dir, parity_images: list[Path], images: list, truth_dir,
              report: ExportReport, log) -> ExportReport:
    """bf16/fp16 gates into the fp32 spec; INT8 by NNCF, kept only where its gate passes."""
    from cvmatte.engine.errors import DeviceError

    from . import openvino as ov_export

    truth = ov_export.load_truth(ov_export.truth_pairs(Path(truth_dir))) if truth_dir else None
    if truth:
        log(f"accuracy against exact alpha on {len(truth)} images of {truth_dir}")
    for precision in ("bf16", "fp16"):
        if precision not in precisions:
            continue
        try:
            gate = ov_export.precision_gate(fp32, precision, images, truth, log)
        except DeviceError as e:
            report.skipped[precision] = f"its gate cannot be measured here: {e}"
            continue
        report.gates[precision] = gate
        ov_export.record_gate(spec_path_for(fp32.path), precision, gate)
        if not gate["passed"]:
            report.skipped[precision] = f"failed its accuracy gate ({gate['evidence']})"
    if "int8" in precisions:
        # Ranges from real photos only: composites (images with exact alpha beside) calibrated with
        # them made u2netp's INT8 worse on held-out truth (+6.6% SAD against +0.6%; NOTES.md).
        calib = [p for p in calibration_images(Path(calib_dir), limit=10_000)
                 if not p.with_name(p.stem + ".alpha.png").is_file()][:300] if calib_dir else parity_images
        try:  # calibration images with exact alpha beside steer NNCF's accuracy control
            control = ov_export.truth_pairs(Path(calib_dir), limit=60) if calib_dir else None
        except FileNotFoundError:
            control = None
        int8 = ov_export.quantize_int8(fp32, fp32.path.with_name(f"{fp32.spec.name}.int8.xml"), calib, control, log)
        gate = ov_export.int8_gate(fp32, int8, images, truth, log)
        report.gates["int8"] = gate
        if gate["passed"]:
            report.files["int8"] = int8.path
            # `--precision auto` on the fp32 file finds the INT8 file through its gate.
            ov_export.record_gate(spec_path_for(fp32.path), "int8", {**gate, "file": int8.path.name})
        else:
            for leftover in (int8.path, int8.path.with_suffix(".bin"), spec_path_for(int8.path)):
                leftover.unlink(missing_ok=True)  # a file outside its gate is never left behind
            report.skipped["int8"] = f"NNCF INT8 failed its gate ({gate['evidence']})"
    return report


def _finish(out_dir: Path, report: ExportReport, trt: bool, log) -> ExportReport:
    if trt:
        from cvmatte.engine.backends.tensorrt_build import build_engine

        for precision, path in list(report.files.items()):
            engine = out_dir / f"{path.stem}.engine"
            spec = zoo.resolve(path).spec
            meta = build_engine(path, spec, engine, timing_cache=out_dir / "timing.cache")
            log(f"built {engine} (TensorRT {meta.tensorrt}, {meta.gpu})")
            report.files[f"{precision}-engine"] = engine
    for row in report.parity:
        log(parity.format_row(row))
    (out_dir / "parity.json").write_text(json.dumps(report.parity + [{"gate": p, **g} for p, g in report.gates.items()],
                                                    indent=2))
    write_bundle_readme(out_dir, report)
    return report


def _demo_images(out_dir: Path) -> list[Path]:
    from cvmatte.samples import write_demo_photos

    try:
        return write_demo_photos(out_dir / "parity-images")
    except RuntimeError as e:
        raise ModelError(f"parity needs real images: pass --calib DIR ({e})") from None


def write_bundle_readme(out_dir: Path, report: ExportReport) -> None:
    """The edge bundle: these files plus the exact commands to build engines on the device."""
    from cvmatte.engine.backends.tensorrt_build import trtexec_command

    lines = ["# Edge bundle", "",
             "TensorRT engines are tied to one GPU and one TensorRT version: build them on the target from these",
             "ONNX files (precision is in the graph: FP16 ops, INT8 Q/DQ nodes; no precision flags needed).", ""]
    for precision in PRECISIONS:
        path = report.files.get(precision)
        if not path:
            continue
        spec = zoo.resolve(path).spec
        lines += [f"## {path.name}", "", f"spec: `{spec_path_for(path).name}`"
                  + (f"; calibration: {json.dumps(spec.extra.get('calibration'))}" if "calibration" in spec.extra else ""),
                  "", "```bash", f"cvmatte export {path.name} -o engines --trt",
                  trtexec_command(path.name, spec), "```", ""]
    (out_dir / "BUILD.md").write_text("\n".join(lines))
