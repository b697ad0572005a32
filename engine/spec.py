"""Model spec: everything a runtime needs to run a model, saved as JSON beside its ONNX file.

No backend guesses these; a model without a spec cannot be run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

SPEC_VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    name: str
    #: (height, width) the model sees whole images at; its coarse pass resizes to this, ignoring aspect.
    input_size: tuple[int, int]
    input_name: str
    output_name: str
    #: Which axes of the ONNX input are symbolic (batch, height, width).
    dynamic_batch: bool = True
    dynamic_hw: bool = False
    channel_order: str = "RGB"
    #: pixel/255 is normalised as (x - mean) / std, per channel.
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    #: "none" when the output already is alpha in [0, 1], "sigmoid" when it is a logit.
    output_activation: str = "none"
    #: True when the model sees only pixels and may run on tiles; False when it needs the whole image.
    tileable: bool = False
    #: Input height/width must be a multiple of this when dynamic_hw.
    size_multiple: int = 32
    #: Number of input channels: 3 (RGB) or 4 (RGB + coarse alpha, for tile refiners).
    in_channels: int = 3
    input_dtype: str = "float32"
    #: Arithmetic inside the graph: "fp32", "fp16" (I/O stay float32) or "int8" (Q/DQ nodes,
    #: I/O float32).
    precision: str = "fp32"
    #: Layers (node names of the ONNX file) that stay in fp32 when a backend runs the rest in a
    #: reduced precision (bf16, fp16): the ones whose rounding moved the model's error on held-out
    #: truth (benchmarks/precision.py finds them).
    fp32_layers: tuple[str, ...] = ()
    #: The accuracy gate of reduced precisions (bf16, fp16) on held-out truth, as measured by
    #: benchmarks/precision.py: precision -> {"passed": bool, "evidence": one line}. `--precision
    #: auto` chooses only precisions that passed; fp32 needs no gate.
    precision_gate: dict = field(default_factory=dict)
    sha256: str = ""
    source: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.output_activation not in ("none", "sigmoid"):
            raise ValueError(f"output_activation must be 'none' or 'sigmoid', got {self.output_activation!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        h, w = self.input_size
        if h <= 0 or w <= 0:
            raise ValueError(f"input_size must be positive, got {self.input_size!r}")

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["spec_version"] = SPEC_VERSION
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        d = json.loads(text)
        d.pop("spec_version", None)
        # Older specs carry `resize`; "stretch" (to input_size, ignoring aspect) was its only value.
        resize = d.pop("resize", "stretch")
        if resize != "stretch":
            raise ValueError(f"resize must be 'stretch', got {resize!r}")
        for key in ("input_size", "mean", "std", "fp32_layers"):
            if key in d:
                d[key] = tuple(d[key])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown spec fields: {sorted(unknown)}")
        return cls(**d)

    def save(self, path: Path) -> None:
        from .imageio import atomic_write_bytes

        atomic_write_bytes(Path(path), (self.to_json() + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> "ModelSpec":
        return cls.from_json(Path(path).read_text())


@dataclass(frozen=True)
class ResolvedModel:
    """A model file (ONNX, TensorRT engine or torch checkpoint) and the spec to run it with."""

    path: Path
    spec: ModelSpec
    #: A combined model's members, resolved (engine/backends/combined.py); () for one model.
    members: tuple["ResolvedModel", ...] = ()


def spec_path_for(model_path: Path) -> Path:
    """The spec lives beside the model: `u2netp.onnx` -> `u2netp.json`."""
    model_path = Path(model_path)
    return model_path.with_suffix(".json")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The file's sha256; an OpenVINO IR model is two files, the .xml graph and the .bin weights
    beside it, and its digest covers both (the graph's bytes, then the weights')."""
    path = Path(path)
    parts = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    h = hashlib.sha256()
    for part in parts:
        with open(part, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()
