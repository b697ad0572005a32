"""Structured channel pruning to a FLOP budget, with torch-pruning's dependency graph.

Removing an output channel of one convolution removes the matching input channel of every layer
that reads it, through concatenations and residual additions (U²-Net's RSU blocks have both);
torch-pruning's DependencyGraph finds those groups, so the pruned network is a smaller dense one
that every backend runs at full speed. Channels are ranked by the L2 norm of their group's weights
and kept in multiples of `round_to` (8: CPU SIMD lanes and tensor cores both want it; 9- or
37-channel layers ran slower than 8- and 32-channel ones here, benchmarks/NOTES.md).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from cvmatte.engine.nets.cvunet import count_flops as conv_flops
from cvmatte.engine.nets.u2net import conv_layers


def _prune(module: nn.Module, size: tuple[int, int], ratio: float, round_to: int, min_channels: int = 0) -> nn.Module:
    """A copy of module with `ratio` of the channels of every layer removed (L2 ranking, whole
    dependency groups); heads that write the alpha (one channel) and layers no wider than
    `min_channels` keep their outputs."""
    import torch_pruning as tp

    pruned = copy.deepcopy(module).eval()
    keep = [m for m in pruned.modules() if isinstance(m, nn.Conv2d) and (m.out_channels == 1 or m.out_channels <= min_channels)]
    pruner = tp.pruner.MetaPruner(pruned, torch.zeros(1, 3, *size), importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=keep, round_to=round_to)
    pruner.step()
    return pruned


def prune_to_flops(module: nn.Module, size: tuple[int, int], fraction: float, round_to: int = 8, min_channels: int = 0,
                   reference_flops: float | None = None, images: torch.Tensor | None = None, log=print) -> nn.Module:
    """A pruned copy of module running at `size` with at most `fraction` of `reference_flops`
    (default: the module's own FLOPs at `size`; give the teacher's at its own input size to
    count a smaller input too): of the uniform channel ratios 5%, 10%, ... 95%, the one whose
    pruned network keeps the most FLOPs within the budget (rounding to `round_to` channels
    makes FLOPs a step function of the ratio). With `images` [N, 3, H, W] at `size`, every
    layer is then re-fitted to the unpruned network's outputs (reconstruct)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the FLOP fraction to keep must be in (0, 1), got {fraction}")
    base = reference_flops or conv_flops(module, size)
    best, best_flops = None, -1.0
    for ratio in [i / 20 for i in range(0, 20)]:
        candidate = module if ratio == 0 else _prune(module, size, ratio, round_to, min_channels)
        flops = conv_flops(candidate, size)
        if best_flops < flops <= fraction * base:
            best, best_flops = (ratio, candidate), flops
    if best is None:
        raise ValueError(f"cannot prune to {fraction:.0%} of the FLOPs in multiples of {round_to} channels")
    ratio, pruned = best
    if ratio == 0:
        pruned = copy.deepcopy(module)
    kept = conv_flops(pruned, size)
    params = (sum(p.numel() for p in pruned.parameters()), sum(p.numel() for p in module.parameters()))
    log(f"pruned {ratio:.0%} of the channels of every layer wider than {min_channels} (multiples of {round_to}): "
        f"{kept / 1e9:.2f} GFLOP at {size[0]}x{size[1]}, {kept / base:.0%} of {base / 1e9:.2f}; "
        f"{params[0] / 1e6:.2f} of {params[1] / 1e6:.2f} M parameters")
    if images is not None:
        pruned = reconstruct(module, pruned, images, log=log)
    return pruned


class _Stop(Exception):
    pass


def _patches(x: torch.Tensor, conv: nn.Conv2d, n: torch.Tensor, y: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """The input windows [S, C * k * k] that produce output pixels (n, y, xs), in the weight's layout."""
    k, (s, _), (p, _), (d, _) = conv.kernel_size[0], conv.stride, conv.padding, conv.dilation
    xp = F.pad(x, (p, p, p, p))
    taps = [xp[n, :, y * s + i * d, xs * s + j * d] for i in range(k) for j in range(k)]  # each [S, C]
    return torch.stack(taps, dim=2).reshape(len(n), -1)


def _kept_channels(original: nn.Conv2d, pruned: nn.Conv2d) -> torch.Tensor:
    """Which output channels of `original` the pruned layer kept, found by their biases (pruning
    copies them unchanged); a tie is refused rather than guessed."""
    bias = original.bias.detach().tolist()
    rows = []
    for b in pruned.bias.detach().tolist():
        matches = [j for j, v in enumerate(bias) if v == b]
        if len(matches) != 1:
            raise ValueError(f"cannot tell which output channel of a convolution a pruned channel came from "
                             f"({len(matches)} have its bias {b})")
        rows.append(matches[0])
    return torch.as_tensor(rows)


def reconstruct(original: nn.Module, pruned: nn.Module, images: torch.Tensor, samples: int = 4096,
                ridge: float = 1e-4, log=print) -> nn.Module:
    """Re-fit every convolution of `pruned`, in the order a forward pass runs them, so that on
    `images` its output matches the original layer's output on the channels it kept (least
    squares over sampled pixels, a little ridge; He et al. 2017, "Channel pruning for
    accelerating very deep neural networks"). Each layer is fitted to the inputs the already
    re-fitted layers before it produce, so errors do not pile up through the network.
    The kept output channels are found by their biases (pruning copies them unchanged)."""
    orig_convs, pruned_convs = conv_layers(original), conv_layers(pruned)
    if len(orig_convs) != len(pruned_convs):
        raise ValueError("the pruned network's topology differs from the original's")
    targets: dict[int, tuple] = {}

    def keep_target(i):
        def hook(m, inputs, out):
            g = torch.Generator().manual_seed(i)
            n, _, h, w = out.shape
            pos = (torch.randint(n, (samples,), generator=g), torch.randint(h, (samples,), generator=g),
                   torch.randint(w, (samples,), generator=g))
            targets[i] = (pos, out[pos[0], :, pos[1], pos[2]])
        return hook

    hooks = [m.register_forward_hook(keep_target(i)) for i, m in enumerate(orig_convs)]
    try:
        with torch.no_grad():
            original.eval()(images)
    finally:
        for h in hooks:
            h.remove()
    pruned.eval()
    before = after = 0.0
    for i, (o, p) in enumerate(zip(orig_convs, pruned_convs)):
        kept = _kept_channels(o, p)
        pos, y_all = targets[i]
        captured = {}

        def grab(m, inputs):
            captured["x"] = inputs[0]
            raise _Stop

        h = p.register_forward_pre_hook(grab)
        try:
            with torch.no_grad():
                pruned(images)
        except _Stop:
            pass
        finally:
            h.remove()
        a = _patches(captured["x"], p, *pos).double()
        a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
        y = y_all[:, kept].double()
        gram = a.T @ a
        gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
        sol = torch.linalg.solve(gram, a.T @ y)  # [P + 1, out]
        with torch.no_grad():
            old = torch.cat([p.weight.reshape(len(kept), -1), p.bias[:, None]], 1).T.double()
            before += float(((a @ old - y) ** 2).mean())
            after += float(((a @ sol - y) ** 2).mean())
            p.weight.copy_(sol[:-1].T.reshape(p.weight.shape).float())
            p.bias.copy_(sol[-1].float())
    log(f"re-fitted {len(pruned_convs)} convolutions to the original's outputs: mean squared error "
        f"{before / len(pruned_convs):.4g} -> {after / len(pruned_convs):.4g} per layer")
    return pruned
