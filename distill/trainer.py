"""The resumable distillation trainer: a CV-UNet student learns a teacher's alpha.

Each run lives in one folder: labels/ (the teacher's alphas, cached), last.pt (written atomically
every eval_every steps, with the optimizer state and the step), best.pt (best held-out score),
metrics.jsonl, and at the end <name>.onnx with its spec, exported through export/. A killed run
continues from last.pt with --resume.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cvmatte.engine import metrics
from cvmatte.engine.preprocess import normalize
from cvmatte.engine.spec import ModelSpec

from . import data, losses
from .checkpoint import load_checkpoint, load_optimizer_state, save_checkpoint
from .cvunet import PRESETS, build, count_flops


@dataclass
class DistillConfig:
    teacher: str
    student: str = "cvunet-s"
    data: list[str] = field(default_factory=list)
    out: str = "runs/distill"
    steps: int | None = None
    minutes: float | None = None
    size: int = 320
    batch_size: int = 8
    lr: float = 2e-3
    eval_every: int = 50
    synthetic: int = 24
    holdout: float = 0.2
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if self.student not in PRESETS:
            raise ValueError(f"student must be one of {', '.join(PRESETS)}; got {self.student!r}")
        if self.steps is None and self.minutes is None:
            raise ValueError("give steps or minutes")
        if self.size % 32:
            raise ValueError(f"size must be a multiple of 32, got {self.size}")


def _tensor(pairs, spec: ModelSpec, device):
    x = torch.from_numpy(np.stack([normalize(rgb, spec) for rgb, _ in pairs])).to(device)
    y = torch.from_numpy(np.stack([a for _, a in pairs])[:, None].astype(np.float32)).to(device)
    return x, y


def evaluate(model, samples: list[data.Sample], spec: ModelSpec, size: int, device) -> dict:
    """Student against the targets of held-out samples (teacher labels, or exact alpha)."""
    model.eval()
    rows = {"teacher": [], "exact": []}
    with torch.no_grad():
        for s in samples:
            rgb, target = data.whole(s, size)
            x, _ = _tensor([(rgb, target)], spec, device)
            pred = model(x)[0, 0].float().cpu().numpy()
            rows["exact" if s.exact else "teacher"].append(
                (metrics.sad(pred, target), metrics.mse(pred, target), metrics.gradient_error(pred, target),
                 metrics.iou(pred, target)))
    model.train()
    out = {}
    for kind, r in rows.items():
        if r:
            a = np.asarray(r).mean(axis=0)
            out.update({f"{kind}_sad": a[0], f"{kind}_mse": a[1], f"{kind}_grad": a[2], f"{kind}_iou": a[3]})
    out["score"] = float(np.mean([v for k, v in out.items() if k.endswith("_sad")]))
    return {k: float(v) for k, v in out.items()}


def distill(cfg: DistillConfig, resume: bool = False, log=print, progress: bool = True) -> dict:
    from cvmatte import Matter
    from cvmatte.export.torch_export import export_module

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = torch.device(cfg.device)
    teacher = Matter(cfg.teacher, device="cpu")
    photos = data.list_photos([Path(d) for d in cfg.data])
    labelled = data.teacher_labels(teacher, photos, out / "labels", log)
    synth = data.synthetic(cfg.synthetic, cfg.seed)
    # A fixed held-out split (by position, so that a resumed run holds out the same images).
    n_hold = max(1, int(round(len(labelled) * cfg.holdout)))
    n_hold_s = max(1, int(round(len(synth) * cfg.holdout))) if synth else 0
    held = labelled[:n_hold] + synth[:n_hold_s]
    train = labelled[n_hold:] + synth[n_hold_s:]
    if not train:
        raise ValueError("every sample is held out: give more photos or synthetic composites")

    spec = ModelSpec(name=cfg.student, input_size=(cfg.size, cfg.size), input_name="image", output_name="alpha",
                     mean=teacher.spec.mean, std=teacher.spec.std, dynamic_batch=True, dynamic_hw=True,
                     source=f"distilled from {teacher.spec.name} (sha256 {teacher.spec.sha256[:12]}) by cvmatte distill",
                     notes=f"trained at {cfg.size}x{cfg.size}; config {json.dumps(asdict(cfg))}")
    model = build(cfg.student).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    step, best, elapsed_before = 0, float("inf"), 0.0
    if resume and (out / "last.pt").is_file():
        model, _, state = load_checkpoint(out / "last.pt")
        model = model.to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
        opt.load_state_dict(load_optimizer_state(out / "last.pt"))
        step, best, elapsed_before = state["step"], state["best"], state["elapsed_s"]
        rng = np.random.default_rng([cfg.seed, step])
        log(f"resumed from {out / 'last.pt'} at step {step}")
    log(f"student {cfg.student}: {count_flops(model, (cfg.size, cfg.size)) / 1e9:.2f} GFLOP at {cfg.size}²; "
        f"{len(train)} training and {len(held)} held-out samples")
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start = time.perf_counter()
    deadline = None if cfg.minutes is None else cfg.minutes * 60 - elapsed_before

    def done():
        if cfg.steps is not None and step >= cfg.steps:
            return True
        return deadline is not None and time.perf_counter() - start >= deadline

    from rich.progress import Progress

    model.train()
    images = 0
    with Progress(console=None, disable=not progress, transient=True) as bar:
        task = bar.add_task("distilling", total=cfg.steps)
        bar.update(task, completed=step)
        while not done():
            batch = [data.augment(train[int(i)], cfg.size, rng) for i in rng.integers(0, len(train), cfg.batch_size)]
            x, y = _tensor(batch, spec, device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                pred = model(x)
            loss, parts = losses.matting_loss(pred.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            images += len(batch)
            rate = images / max(1e-9, time.perf_counter() - start)
            bar.update(task, completed=step, description=f"step {step} loss {loss.item():.4f} {rate:.1f} img/s")
            if step % cfg.eval_every == 0 or done():
                scores = evaluate(model, held, spec, cfg.size, device)
                elapsed = elapsed_before + time.perf_counter() - start
                if scores["score"] < best:
                    best = scores["score"]
                    save_checkpoint(out / "best.pt", model, spec, {"step": step, **scores})
                save_checkpoint(out / "last.pt", model, spec, {"step": step, "best": best, "elapsed_s": elapsed},
                                opt.state_dict())
                # After the checkpoint: a kill in between never leaves a row the resumed run repeats.
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps({"step": step, "loss": loss.item(), **parts, **scores, "elapsed_s": elapsed}) + "\n")
                log(f"step {step}: loss {loss.item():.4f}, held-out " +
                    ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    best_model, best_spec, best_state = load_checkpoint(out / "best.pt")
    onnx_spec = export_module(best_model, best_spec, out / f"{cfg.student}.onnx")
    log(f"best step {best_state['step']} exported to {out / (cfg.student + '.onnx')}")
    return {"step": step, "best": best_state, "onnx": str(out / f"{cfg.student}.onnx"), "spec": onnx_spec}
