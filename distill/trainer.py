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
from cvmatte.engine.nets.checkpoint import load_checkpoint, load_optimizer_state, save_checkpoint
from cvmatte.engine.nets.cvunet import PRESETS, build, count_flops


@dataclass
class DistillConfig:
    teacher: str
    student: str = "cvunet-s"
    data: list[str] = field(default_factory=list)
    out: str = "runs/distill"
    steps: int | None = None
    minutes: float | None = None
    size: int = 320
    infer_size: int | None = None  # the spec's (and evaluation's) size; default: size
    batch_size: int = 8
    lr: float = 2e-3
    eval_every: int = 50
    synthetic: int = 24
    photo_share: float = 0.5
    holdout: float = 0.2
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if self.student not in PRESETS:
            raise ValueError(f"student must be one of {', '.join(PRESETS)}; got {self.student!r}")
        if self.steps is None and self.minutes is None:
            raise ValueError("give steps or minutes")
        if not 0.0 <= self.photo_share <= 1.0:
            raise ValueError(f"photo_share is a fraction of each batch, got {self.photo_share}")
        self.infer_size = self.infer_size or self.size
        if self.size % 32 or self.infer_size % 32:
            raise ValueError(f"sizes must be multiples of 32, got {self.size} and {self.infer_size}")


def budget_fraction(step: int, steps: int | None, elapsed_s: float, minutes: float | None) -> float:
    """How far through the budget (steps or minutes, whichever comes first), resumes included."""
    f = 0.0 if steps is None else step / steps
    if minutes is not None:
        f = max(f, elapsed_s / (minutes * 60))
    return min(f, 1.0)


def scheduled_lr(base: float, fraction: float) -> float:
    """Short linear warm-up, then cosine decay to base/1000 at the end of the budget; a plain float
    (a numpy scalar in the optimizer state would not load with weights_only)."""
    return float(max(base * min(1.0, fraction / 0.03) * 0.5 * (1 + np.cos(np.pi * fraction)), base * 1e-3))


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
    # A fixed held-out split: every k-th of the sorted teacher-labelled photos and of the exact
    # samples, so that it spans all folders and a resumed run holds out the same images.
    photos_t = [s for s in labelled if not s.exact]
    exact = [s for s in labelled if s.exact] + synth
    held = [s for group in (photos_t, exact) for i, s in enumerate(group) if data.is_held_out(i, cfg.holdout)]
    train_photos = [s for i, s in enumerate(photos_t) if not data.is_held_out(i, cfg.holdout)]
    train_exact = [s for i, s in enumerate(exact) if not data.is_held_out(i, cfg.holdout)]
    if not train_photos and not train_exact:
        raise ValueError("every sample is held out: give more photos or synthetic composites")
    n_photo = cfg.batch_size if not train_exact else 0 if not train_photos else \
        int(round(cfg.batch_size * cfg.photo_share))

    spec = ModelSpec(name=cfg.student, input_size=(cfg.infer_size, cfg.infer_size), input_name="image", output_name="alpha",
                     mean=teacher.spec.mean, std=teacher.spec.std, dynamic_batch=True, dynamic_hw=True,
                     source=f"distilled from {teacher.spec.name} (sha256 {teacher.spec.sha256[:12]}) by cvmatte distill",
                     notes=f"trained on {cfg.size}x{cfg.size} crops; config {json.dumps(asdict(cfg))}")
    # channels_last: 17% faster training steps on this CPU (NOTES.md), and the layout cuDNN prefers.
    model = build(cfg.student).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    step, best, elapsed_before = 0, float("inf"), 0.0
    if resume and (out / "last.pt").is_file():
        model, _, state = load_checkpoint(out / "last.pt")
        model = model.to(device, memory_format=torch.channels_last).train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
        opt.load_state_dict(load_optimizer_state(out / "last.pt"))
        step, best, elapsed_before = state["step"], state["best"], state["elapsed_s"]
        rng = np.random.default_rng([cfg.seed, step])
        log(f"resumed from {out / 'last.pt'} at step {step}")
    log(f"student {cfg.student}: {count_flops(model, (cfg.size, cfg.size)) / 1e9:.2f} GFLOP at {cfg.size}²; "
        f"{len(train_photos)} teacher-labelled and {len(train_exact)} exact training samples "
        f"({n_photo} of {cfg.batch_size} per batch teacher-labelled), {len(held)} held out")
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start = time.perf_counter()

    def progress_fraction():
        return budget_fraction(step, cfg.steps, elapsed_before + time.perf_counter() - start, cfg.minutes)

    def done():
        return progress_fraction() >= 1.0

    from rich.progress import Progress

    model.train()
    images = 0
    with Progress(console=None, disable=not progress, transient=True) as bar:
        task = bar.add_task("distilling", total=cfg.steps)
        bar.update(task, completed=step)
        while not done():
            picks = [train_photos[int(i)] for i in rng.integers(0, max(1, len(train_photos)), n_photo)] + \
                [train_exact[int(i)] for i in rng.integers(0, max(1, len(train_exact)), cfg.batch_size - n_photo)]
            batch = [data.augment(s, cfg.size, rng) for s in picks]
            x, y = _tensor(batch, spec, device)
            x = x.contiguous(memory_format=torch.channels_last)
            for group in opt.param_groups:
                group["lr"] = scheduled_lr(cfg.lr, progress_fraction())
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
                scores = evaluate(model, held, spec, cfg.infer_size, device)
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
