"""CV-UNet checkpoints: weights, architecture and the model spec in one file, loadable with
torch.load(weights_only=True) (no pickled code), written atomically."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from cvmatte.engine.errors import ModelError
from cvmatte.engine.imageio import atomic_write_bytes
from cvmatte.engine.spec import ModelSpec

from .cvunet import CVUNet, CVUNetConfig

FORMAT = "cvmatte-cvunet/1"


def save_checkpoint(path: Path, model: CVUNet, spec: ModelSpec, extra: dict | None = None,
                    optimizer_state: dict | None = None) -> None:
    """extra: JSON-able training state (step, metrics, ...); optimizer_state: the optimizer's
    state_dict, so that a resumed run continues exactly."""
    payload = {
        "format": FORMAT,
        "config": json.dumps({**model.config.__dict__, "depths": list(model.config.depths)}),
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


def load_checkpoint(path: Path) -> tuple[CVUNet, ModelSpec, dict]:
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not a CV-UNet checkpoint (expected format {FORMAT!r}); "
                         "checkpoints come from `cvmatte distill`")
    cfg = json.loads(payload["config"])
    cfg["depths"] = tuple(cfg["depths"])
    model = CVUNet(CVUNetConfig(**cfg))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), ModelSpec.from_json(payload["spec"]), json.loads(payload["extra"])
