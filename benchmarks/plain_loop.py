"""The peer every cvmatte figure is compared with: how rembg runs a model (rembg/bg.py,
session_simple.py), one image after another. Open with Pillow, resize to the model's size
(Lanczos), normalise, run on ONNX Runtime in fp32, min-max the output, resize back (Lanczos), cut
out, save the PNG with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def plain_mask(session, spec, img: Image.Image) -> Image.Image:
    """The rembg-style mask of one RGB image: Lanczos resize to the model's size, normalise, run,
    min-max the output, Lanczos resize back."""
    small = np.array(img.resize(spec.input_size[::-1], Image.LANCZOS)) / 255.0
    x = ((small - np.array(spec.mean)) / np.array(spec.std)).transpose(2, 0, 1)[None].astype(np.float32)
    pred = session.run(None, {spec.input_name: x})[0][0, 0]
    pred = (pred - pred.min()) / max(1e-6, pred.max() - pred.min())
    return Image.fromarray((pred * 255).astype(np.uint8), "L").resize(img.size, Image.LANCZOS)


def plain_session(model_path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])


def plain_loop(paths: list[Path], model_path: Path, spec, out: Path, session=None) -> None:
    session = session or plain_session(model_path)
    out.mkdir(parents=True, exist_ok=True)
    for p in paths:
        img = Image.open(p).convert("RGB")
        mask = plain_mask(session, spec, img)
        cutout = Image.composite(img, Image.new("RGBA", img.size, 0), mask)
        cutout.save(out / f"{p.stem}.png")
