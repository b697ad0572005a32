"""A teacher as a torch module, to fine-tune or prune: the network's own weights, not a copy of
its outputs.

- U²-Net-p and IS-Net ONNX files (`u2netp`, `isnet-general-use`) become their native ports
  (`engine.nets.u2net.U2NetP`, `engine.nets.isnet.ISNet`).
- cvmatte checkpoints (`.pt`) load as they are.
- Any other ONNX file (the converted CV-UNet in production) goes through onnx2torch, a maintained
  converter, where it is installed and can convert the graph; otherwise a clear ModelError says
  what is missing. onnx2torch is not a dependency: it imports torchvision, whose wheel must match
  the installed torch (`pip install onnx2torch torchvision` with the matching version).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from cvmatte.engine import zoo
from cvmatte.engine.errors import ModelError
from cvmatte.engine.nets.checkpoint import load_checkpoint
from cvmatte.engine.nets.isnet import port_from_onnx
from cvmatte.engine.spec import ModelSpec


def torch_teacher(model: str | Path) -> tuple[nn.Module, ModelSpec]:
    """model: a zoo name or a file -> (module in eval mode, its spec). The module maps the spec's
    normalised input [N, 3, H, W] to alpha [N, 1, H, W] in [0, 1]."""
    resolved = zoo.resolve(model)
    path = Path(resolved.path)
    if path.suffix == ".pt":
        module, spec, _ = load_checkpoint(path)
        return module, spec
    try:
        return port_from_onnx(path), resolved.spec
    except ValueError as not_u2net:
        return _onnx2torch(path, resolved.spec, str(not_u2net)), resolved.spec


def _onnx2torch(path: Path, spec: ModelSpec, why_not_native: str) -> nn.Module:
    try:
        from onnx2torch import convert
    except ImportError as e:
        raise ModelError(f"{path} is not a U²-Net-p ({why_not_native}); converting another ONNX network to torch "
                         f"needs onnx2torch and a torchvision matching your torch ({e})") from None
    try:
        module = convert(str(path))
    except Exception as e:  # onnx2torch raises NotImplementedError and others for unsupported nodes
        raise ModelError(f"{path}: onnx2torch cannot convert this graph ({type(e).__name__}: {e}); fine-tune it "
                         "through its training code instead") from None
    return _FirstOutput(module, spec).eval()


class _FirstOutput(nn.Module):
    """A converted graph's first output as alpha, the spec's activation applied."""

    def __init__(self, module: nn.Module, spec: ModelSpec):
        super().__init__()
        self.module, self.sigmoid = module, spec.output_activation == "sigmoid"

    def forward(self, x):
        out = self.module(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out.sigmoid() if self.sigmoid else out
