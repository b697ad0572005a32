"""Checkpoints of the torch networks the engine runs (CV-UNets and U²-Net-p, pruned or not):
weights, architecture and the model spec in one file, loadable with torch.load(weights_only=True)
(no pickled code), written atomically."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from ..imageio import atomic_write_bytes
from ..spec import ModelSpec
from .cvunet import CVUNet, CVUNetConfig
from .isnet import ISNet
from .u2net import U2NetP, layout, load_layout

#: "arch" says how to rebuild the module: a CV-UNet from its config, a U²-Net-p from the weight
#: shape of every convolution (so structurally pruned students load with the same code).
FORMAT = "cvmatte-net/2"
#: Checkpoints written before U²-Net-p joined: CV-UNets only, no "arch" key.
FORMAT_V1 = "cvmatte-cvunet/1"


def _architecture(model: nn.Module) -> dict:
    if isinstance(model, CVUNet):
        return {"arch": "cvunet", "config": {**model.config.__dict__, "depths": list(model.config.depths)}}
    if isinstance(model, U2NetP):
        return {"arch": "u2netp", "layout": layout(model)}
    if isinstance(model, ISNet):  # fixed widths: the state dict says everything else
        return {"arch": "isnet"}
    raise TypeError(f"no checkpoint format for {type(model).__name__}")


def save_checkpoint(path: Path, model: nn.Module, spec: ModelSpec, extra: dict | None = None,
                    optimizer_state: dict | None = None) -> None:
    """extra: JSON-able training state (step, metrics, ...); optimizer_state: the optimizer's
    state_dict, so that a resumed run continues exactly."""
    payload = {
        "format": FORMAT,
        "architecture": json.dumps(_architecture(model)),
        "spec": spec.to_json(),
        "state_dict": model.state_dict(),
        "extra": json.dumps(extra or {}),
    }
    if optimizer_state is not None:
        payload["optimizer"] = optimizer_state
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_optimizer_state(path: Path) -> dict | None:
    return torch.load(Path(path), map_location="cpu", weights_only=True).get("optimizer")


def build_architecture(arch: dict) -> nn.Module:
    if arch.get("arch") == "cvunet":
        cfg = dict(arch["config"])
        cfg["depths"] = tuple(cfg["depths"])
        return CVUNet(CVUNetConfig(**cfg))
    if arch.get("arch") == "u2netp":
        return load_layout(arch["layout"])
    if arch.get("arch") == "isnet":
        return ISNet()
    raise ModelError(f"unknown architecture {arch.get('arch')!r} in checkpoint")


def load_checkpoint(path: Path) -> tuple[nn.Module, ModelSpec, dict]:
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt == FORMAT:
        arch = json.loads(payload["architecture"])
    elif fmt == FORMAT_V1:
        arch = {"arch": "cvunet", "config": json.loads(payload["config"])}
    else:
        raise ModelError(f"{path}: not a cvmatte checkpoint (expected format {FORMAT!r}); "
                         "checkpoints come from `cvmatte distill` and `cvmatte finetune`")
    model = build_architecture(arch)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ModelError(f"{path}: weights do not fit the architecture it names ({e})") from None
    return model.eval(), ModelSpec.from_json(payload["spec"]), json.loads(payload["extra"])
