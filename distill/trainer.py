"""The resumable distillation trainer: a student learns a teacher's alpha on real photos and the
exact alpha of composites.

The student is a CV-UNet preset trained from scratch (for a GPU), or a model whose trained weights
it starts from (`u2netp`, a checkpoint): with the stock teacher labelling the photos that is a
fine-tune that keeps the teacher's saliency while the composites teach opaque products and clean
backdrops; with `prune` it is first pruned to a FLOP budget (distill/prune.py) and then distilled.

Each run lives in one folder: labels/ (the teacher's alphas, cached), last.pt (written atomically
every eval_every steps, with the optimizer state and the step), best.pt (best held-out score),
metrics.jsonl, and at the end <name>.onnx with its spec, exported through export/. A killed run
continues from last.pt with --resume.
"""

from __future__ import annotations

import importlib.util
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
from cvmatte.engine.nets.cvunet import PRESETS, CVUNet, build

from .prune import conv_flops, prune_to_flops


@dataclass
class DistillConfig:
    teacher: str
    #: A CV-UNet preset (random weights) or a model to start from (zoo name, .onnx, .pt).
    student: str = "cvunet-s"
    #: The trained model's name (its ONNX file and spec); default: the preset, or "<student>-distilled".
    name: str | None = None
    #: Prune the starting model to this share of its FLOPs (at its own input size; a smaller
    #: infer_size counts) before training (e.g. 0.33).
    prune: float | None = None
    #: Layers no wider than this keep all their channels when pruning (u2netp's 16-channel inner
    #: layers: halving them broke the network beyond repair in an hour).
    prune_min_channels: int = 16
    data: list[str] = field(default_factory=list)
    out: str = "runs/distill"
    steps: int | None = None
    minutes: float | None = None
    size: int = 320
    infer_size: int | None = None  # the spec's (and evaluation's) size; default: size
    batch_size: int = 8
    lr: float = 2e-3
    eval_every: int = 50
    #: Procedural composites textured with the demo photos; 0 keeps those photos out of training.
    synthetic: int = 0
    photo_share: float = 0.5
    #: Share of samples seen whole, stretched to the input size as the engine's coarse pass sees
    #: them; the rest are random crops.
    whole_share: float = 0.5
    #: Which checkpoint is exported: "best" (held-out score) or "last" (the end of the schedule,
    #: for fine-tunes whose held-out score is measured against the model being changed).
    select: str = "best"
    #: U²-Net-p's own BCE on the fused and side logits, added to the matting losses. Off by default:
    #: it made the product fine-tune worse on held-out composites (SAD +11% against stock u2netp,
    #: the run without it -17.6%; benchmarks/NOTES.md).
    deep_supervision: bool = False
    holdout: float = 0.2
    seed: int = 0
    device: str = "cpu"
    #: Mixed precision of the forward pass: "fp16" (CUDA, with a gradient scaler), "bf16" (CUDA,
    #: or CPUs with AVX-512 BF16 or AMX), "off", or "auto": fp16 on CUDA, fp32 on the CPU. On a
    #: 2-core EPYC with AVX-512 BF16 a U²-Net-p step (batch 8 at 320²) took 4.2 s in bf16 against
    #: 11.8 s, but after 16 equal steps its held-out SAD was 1.84 against 1.73: not shown equal, so
    #: bf16 stays opt-in on the CPU (benchmarks/NOTES.md).
    amp: str = "auto"

    def __post_init__(self):
        if self.amp not in ("auto", "off", "fp16", "bf16"):
            raise ValueError(f"amp must be auto, off, fp16 or bf16; got {self.amp!r}")
        if self.select not in ("best", "last"):
            raise ValueError(f"select must be 'best' or 'last', got {self.select!r}")
        if self.name is None:
            self.name = self.student if self.student in PRESETS else f"{Path(self.student).stem}-distilled"
        if self.prune is not None and not 0.0 < self.prune < 1.0:
            raise ValueError(f"prune is the share of FLOPs to keep, in (0, 1); got {self.prune}")
        if self.prune is not None and self.student in PRESETS:
            raise ValueError("prune starts from trained weights: give a model as the student, not a preset")
        if self.prune is not None and importlib.util.find_spec("torch_pruning") is None:
            raise ValueError("pruning needs torch-pruning: pip install 'cvmatte[distill]'")
        if self.steps is None and self.minutes is None:
            raise ValueError("give steps or minutes")
        if not 0.0 <= self.photo_share <= 1.0:
            raise ValueError(f"photo_share is a fraction of each batch, got {self.photo_share}")
        self.infer_size = self.infer_size or self.size
        if self.size % 32 or self.infer_size % 32:
            raise ValueError(f"sizes must be multiples of 32, got {self.size} and {self.infer_size}")


def amp_mode(amp: str, device) -> str:
    """The mixed precision a run trains in: "off", "fp16" or "bf16" (refused where it cannot run)."""
    if amp == "auto":
        return "fp16" if device.type == "cuda" else "off"
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp fp16 trains on CUDA only (with a gradient scaler); on the CPU use bf16 or off")
    if amp == "bf16" and device.type == "cpu" and not (torch.cpu._is_avx512_bf16_supported()
                                                       or torch.cpu._is_amx_tile_supported()):
        raise ValueError("amp bf16 on the CPU needs AVX-512 BF16 or AMX, which this CPU lacks: use off")
    return amp


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
            a = np.asarray(r)
            mean = a.mean(axis=0)
            out.update({f"{kind}_sad": mean[0], f"{kind}_mse": mean[1], f"{kind}_grad": mean[2], f"{kind}_iou": mean[3],
                        f"{kind}_sad_median": np.median(a[:, 0])})
    # Medians: a photo with no clear subject (a wallpaper) has a teacher alpha near 0.5 everywhere,
    # which swings with any change of the weights and would otherwise decide the mean alone.
    out["score"] = float(np.mean([v for k, v in out.items() if k.endswith("_sad_median")]))
    return {k: float(v) for k, v in out.items()}


def _start(cfg: DistillConfig) -> tuple[torch.nn.Module, str, ModelSpec | None]:
    """The module training starts from, a line saying where it came from, and the spec of the
    trained model it copies (None for a preset's random weights). Checked before any labelling:
    only networks cvmatte can checkpoint (CV-UNet, U²-Net-p) can be trained."""
    if cfg.student in PRESETS:
        return build(cfg.student), f"CV-UNet {cfg.student}, random weights", None
    from cvmatte.engine.nets.u2net import U2NetP

    from .teacher import torch_teacher

    module, start = torch_teacher(cfg.student)
    if not isinstance(module, (U2NetP, CVUNet)):
        raise ValueError(f"{cfg.student}: only a CV-UNet or a U²-Net-p can be trained here (a converted graph "
                         "cannot be checkpointed); fine-tune it through its own training code")
    origin = f"started from the weights of {start.name}" + (f" (sha256 {start.sha256[:12]})" if start.sha256 else "")
    return module, origin, start


def _pruned(cfg: DistillConfig, module, start: ModelSpec, calibration: list[data.Sample], log):
    """The starting module pruned to cfg.prune of its FLOPs at its own input size when run at
    cfg.infer_size, then re-fitted layer by layer to its outputs on (up to 16 of) `calibration`
    (prune.reconstruct), so that training starts from a working network."""
    images = torch.from_numpy(np.stack([normalize(data.whole(s, cfg.infer_size)[0], start)
                                        for s in calibration[:16]]))
    module = prune_to_flops(module, (cfg.infer_size, cfg.infer_size), cfg.prune, min_channels=cfg.prune_min_channels,
                            reference_flops=conv_flops(module, start.input_size), images=images, log=log)
    return module, (f", pruned to at most {cfg.prune:.0%} of its FLOPs at {start.input_size[0]}x"
                    f"{start.input_size[1]} when run at {cfg.infer_size}x{cfg.infer_size}")


def distill(cfg: DistillConfig, resume: bool = False, log=print, progress: bool = True) -> dict:
    from cvmatte import Matter
    from cvmatte.export.torch_export import export_module

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = torch.device(cfg.device)
    resuming = resume and (out / "last.pt").is_file()
    if not resuming:
        model, origin, start_spec = _start(cfg)
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

    opt_state, step, best, elapsed_before = None, 0, float("inf"), 0.0
    if resuming:
        # The checkpoint holds the pruned architecture and the spec: nothing is pruned again.
        model, spec, state = load_checkpoint(out / "last.pt")
        opt_state = load_optimizer_state(out / "last.pt")
        step, best, elapsed_before = state["step"], state["best"], state["elapsed_s"]
        rng = np.random.default_rng([cfg.seed, step])
        log(f"resumed from {out / 'last.pt'} at step {step}")
    else:
        # A trained starting model keeps its own normalisation; a preset learns the teacher's.
        norm = start_spec or teacher.spec
        if cfg.prune is not None:
            model, how = _pruned(cfg, model, norm, train_photos + train_exact, log)
            origin += how
        spec = ModelSpec(name=cfg.name, input_size=(cfg.infer_size, cfg.infer_size), input_name="image",
                         output_name="alpha", mean=norm.mean, std=norm.std, dynamic_batch=True, dynamic_hw=True,
                         source=f"{origin}; the teacher labelling the photos: {teacher.model_id} (name, file sha256 "
                         "or a combined model's members and rule); trained by cvmatte distill",
                         notes=f"trained on {cfg.size}x{cfg.size} inputs; config {json.dumps(asdict(cfg))}")
    # channels_last: 17% faster training steps on this CPU (NOTES.md), and the layout cuDNN prefers.
    model = model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    log(f"student {cfg.name} ({spec.source.split(';')[0]}): {conv_flops(model, (cfg.size, cfg.size)) / 1e9:.2f} GFLOP "
        f"at {cfg.size}²; {len(train_photos)} teacher-labelled and {len(train_exact)} exact training samples "
        f"({n_photo} of {cfg.batch_size} per batch teacher-labelled), {len(held)} held out")
    amp = amp_mode(cfg.amp, device)
    use_amp = amp != "off"
    amp_dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")  # bf16 keeps fp32's range: no scaling
    start = time.perf_counter()

    def progress_fraction():
        return budget_fraction(step, cfg.steps, elapsed_before + time.perf_counter() - start, cfg.minutes)

    def done():
        return progress_fraction() >= 1.0

    from rich.progress import Progress

    def checkpoint(loss, parts):
        nonlocal best
        scores = evaluate(model, held, spec, cfg.infer_size, device)
        elapsed = elapsed_before + time.perf_counter() - start
        if scores["score"] < best:
            best = scores["score"]
            save_checkpoint(out / "best.pt", model, spec, {"step": step, **scores})
        save_checkpoint(out / "last.pt", model, spec, {"step": step, "best": best, "elapsed_s": elapsed},
                        opt.state_dict())
        # After the checkpoint: a kill in between never leaves a row the resumed run repeats.
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "loss": loss, **parts, **scores, "elapsed_s": elapsed}) + "\n")
        log(f"step {step}: " + ("" if loss is None else f"loss {loss:.4f}, ") + "held-out " +
            ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))

    if not resuming:
        checkpoint(None, {})  # the starting point: "best" is never worse than where training began
    model.train()
    images = 0
    with Progress(console=None, disable=not progress, transient=True) as bar:
        task = bar.add_task("distilling", total=cfg.steps)
        bar.update(task, completed=step)
        while not done():
            picks = [train_photos[int(i)] for i in rng.integers(0, max(1, len(train_photos)), n_photo)] + \
                [train_exact[int(i)] for i in rng.integers(0, max(1, len(train_exact)), cfg.batch_size - n_photo)]
            batch = [data.augment(s, cfg.size, rng, cfg.whole_share) for s in picks]
            x, y = _tensor(batch, spec, device)
            x = x.contiguous(memory_format=torch.channels_last)
            for group in opt.param_groups:
                group["lr"] = scheduled_lr(cfg.lr, progress_fraction())
            supervise_sides = cfg.deep_supervision and hasattr(model, "logits")  # U²-Net-p only
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                fused, sides = model.logits(x) if supervise_sides else (None, None)
                pred = torch.sigmoid(fused) if supervise_sides else model(x)
            loss, parts = losses.matting_loss(pred.float(), y)
            if supervise_sides:
                bce = losses.deep_supervision_loss(fused.float(), [s.float() for s in sides], y)
                loss, parts["bce"] = loss + bce, float(bce.detach())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            # A bounded step: one odd batch cannot throw a trained network out of its basin.
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            step += 1
            images += len(batch)
            rate = images / max(1e-9, time.perf_counter() - start)
            bar.update(task, completed=step, description=f"step {step} loss {loss.item():.4f} {rate:.1f} img/s")
            if step % cfg.eval_every == 0 or done():
                checkpoint(loss.item(), parts)
    best_model, best_spec, best_state = load_checkpoint(out / f"{cfg.select}.pt")
    onnx_spec = export_module(best_model, best_spec, out / f"{cfg.name}.onnx")
    log(f"{cfg.select} step {best_state['step']} exported to {out / (cfg.name + '.onnx')}")
    if best_state["step"] == 0:
        log("warning: no step beat the starting model on the held-out split; what was exported is the start "
            "(for a fine-tune scored against its own teacher, --select last)")
    return {"step": step, "best": best_state, "onnx": str(out / f"{cfg.name}.onnx"), "spec": onnx_spec}
