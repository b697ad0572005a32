"""torch module -> ONNX with dynamic batch, height and width, checked against torch.

The TorchScript-based exporter (dynamo=False) is used on purpose: its `dynamic_axes` are complete
for U-Nets whose decoder sizes follow the skip tensors, and it needs no onnxscript; the result is
verified against torch at two batch sizes and two resolutions before it is accepted.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from cvmatte.engine.errors import ModelError
from cvmatte.engine.spec import ModelSpec

from .onnx_passes import save_with_spec

OPSET = 17


def export_module(module, spec: ModelSpec, path: Path, atol: float = 1e-4) -> ModelSpec:
    """module: a torch.nn.Module mapping float32 [N, C, H, W] to alpha [N, 1, H, W].
    Writes path and its spec (dynamic N, H, W) and returns the spec."""
    import onnx
    import onnxruntime as ort
    import torch

    module = module.eval()
    # TorchScript names graph values after the I/O names and refuses names like "1959" (the
    # packaged u2netp's output): such a model is exported with plain names, which its spec records.
    if not (spec.input_name.isidentifier() and spec.output_name.isidentifier()):
        spec = replace(spec, input_name="image", output_name="alpha")
    h, w = spec.input_size
    c = spec.in_channels
    dyn = {0: "N", 2: "H", 3: "W"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.zeros(1, c, h, w),), str(path), input_names=[spec.input_name],
                          output_names=[spec.output_name], opset_version=OPSET, dynamo=False,
                          dynamic_axes={spec.input_name: dyn, spec.output_name: dyn})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    m = spec.size_multiple
    rng = np.random.default_rng(0)
    for shape in ((2, c, h, w), (1, c, h + m, w + 2 * m)):
        x = rng.normal(size=shape).astype(np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        (got,) = session.run([spec.output_name], {spec.input_name: x})
        if got.shape != expected.shape or np.abs(got - expected).max() > atol:
            diff = np.abs(got - expected).max() if got.shape == expected.shape else f"shape {got.shape}"
            raise ModelError(f"{path}: ONNX differs from torch at input {shape}: {diff} (tolerance {atol})")
    return save_with_spec(onnx.load(str(path)), path, spec, dynamic_batch=True, dynamic_hw=True)


def export_checkpoint(path: Path, out_dir: Path) -> ModelSpec:
    """A CV-UNet checkpoint from `cvmatte distill` -> out_dir/<name>.onnx and its spec."""
    from cvmatte.engine.nets.checkpoint import load_checkpoint

    model, spec, _ = load_checkpoint(path)
    return export_module(model, spec, Path(out_dir) / f"{spec.name}.onnx")
