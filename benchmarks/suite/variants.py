"""What is compared, the subjects every measurement runs on: the model files for each requested
model and precision (FP16/INT8 exported once by the export toolchain and kept under
<out>/models/ for the next run), the catalog configurations set side by side (the plain
rembg-style loop, cvmatte without tiles, with tiles and the guided filter, with the learned refiner
when it is installed), and the note on the ModelScope whole-graph peer when it cannot run here.
Nothing here is timed.
"""

from __future__ import annotations

from pathlib import Path

from cvmatte import Matter
from cvmatte.benchmarks.suite.config import BenchConfig
from cvmatte.engine import zoo
from cvmatte.engine.errors import CvmatteError


def model_variants(cfg: BenchConfig, work: Path, log) -> dict[str, tuple[str, str | Path]]:
    """label ("<model> <precision>") -> (precision, model) for every requested model and precision.
    FP16/INT8 are ONNX files for ONNX Runtime, from the export toolchain (kept under <out>/models/
    for the next run) when ONNX Runtime is benchmarked; bf16 is an inference precision of the fp32
    model."""
    variants = {}
    for name in cfg.models:
        try:
            resolved = zoo.resolve(name)
        except CvmatteError as e:
            log(f"skipping {name}: {e}")
            continue
        variants[f"{name} fp32"] = ("fp32", name)
        for p in [p for p in cfg.precisions if p != "fp32"]:
            variants[f"{name} {p}"] = (p, name)
        wanted = [p for p in cfg.precisions if p in ("fp16", "int8")]
        if not wanted or "onnxruntime" not in cfg.backends or cfg.quick:  # --quick: no export (minutes)
            continue
        folder = work / resolved.spec.name
        missing = [p for p in wanted if not (folder / f"{resolved.spec.name}.{p}.onnx").is_file()]
        if missing:
            from cvmatte.export.convert import export

            log(f"exporting {name} to {', '.join(missing)} (kept in {folder} for the next run)")
            export(name, folder, precisions=["fp32", *missing], log=lambda *_: None)
        for p in wanted:
            variants[f"{name} {p}"] = (p, folder / f"{resolved.spec.name}.{p}.onnx")
    return variants


def backend_runs(backend: str, variants: dict[str, tuple[str, str | Path]]) -> list[tuple[str, str, str | Path, str]]:
    """(label, precision, model, inference precision) of what one backend runs: ONNX Runtime and
    TensorRT the files as they are; OpenVINO and torch the fp32 model in fp32 and bf16, and
    OpenVINO the model's gated INT8 file (NNCF) for int8."""
    runs = []
    for label, (precision, model) in variants.items():
        name = label.rsplit(" ", 1)[0]
        if backend in ("onnxruntime", "tensorrt"):
            if precision == "fp32" or model != name:  # a file of that precision was exported
                runs.append((label, precision, model, "fp32"))
        elif precision in ("fp32", "bf16"):
            runs.append((label, precision, name, precision))
        elif precision == "int8" and backend == "openvino":
            found = zoo.variant(zoo.resolve(name), "int8")
            if found is not None:
                runs.append((label, "int8", found.path, "fp32"))
    return runs


def catalog_configs(cfg: BenchConfig) -> dict[str, dict]:
    """name -> Matter keyword arguments (or {"plain_loop": model}) for the throughput and accuracy
    runs: the plain loop, cvmatte as it runs by default (backend and precision chosen for this
    machine), and with ONNX Runtime in fp32 (the earlier default) for the same work."""
    configs = {}
    for name in cfg.models:
        configs[f"plain loop (rembg-style), {name}"] = {"plain_loop": name}
        configs[f"cvmatte {name}, no tiles"] = {"model": name, "tile": False}
        configs[f"cvmatte {name}, tiles + guided filter"] = {"model": name}
        configs[f"cvmatte {name}, tiles + guided filter, onnxruntime fp32"] = {"model": name, "backend": "onnxruntime",
                                                                               "precision": "fp32"}
        if "cvunet-refiner" in zoo.ZOO:
            configs[f"cvmatte {name}, tiles + learned refiner"] = {"model": name, "refiner": "cvunet-refiner"}
    return configs


def catalog_matter(kwargs: dict) -> Matter:
    kw = dict(kwargs)
    return Matter(kw.pop("model"), device="cpu", **kw)


def modelscope_peer() -> str:
    """The stock ModelScope pipeline needs the CV-UNet graph and ModelScope/TensorFlow; say why not."""
    if zoo.cached("cv-unet-universal") is None:
        return ("not run: the CV-UNet graph is not installed on this machine (ModelScope hub unreachable); "
                "`cvmatte models --fetch cv-unet-universal` where it is reachable")
    return "not run: the ModelScope whole-graph peer needs `pip install 'cvmatte[modelscope]'` and TensorFlow"

