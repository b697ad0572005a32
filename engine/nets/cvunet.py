"""The CV-UNet family in torch: a U-Net whose encoder is swappable (ResNet-style basic blocks for
the large model, MobileNet-style inverted residuals for the edge), with a width multiplier, skip
connections at every stride and a sigmoid alpha head.

A U-Net is composition: the encoder reports its channels per stride (2, 4, 8, 16, 32), the
decoder is built by zipping those lists into blocks, and the head maps to one alpha channel.
Decoder upsampling takes its size from the skip tensor, so any input size works (a multiple of
32 is the natural one) and ONNX export keeps height and width dynamic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _ch(c: float, width: float) -> int:
    """Channels scaled by the width multiplier, rounded to a multiple of 8 (fast on every backend)."""
    return max(8, int(round(c * width / 8)) * 8)


class ConvBNAct(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, groups=1, act=True):
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True) if act else nn.Identity())


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with a shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(ConvBNAct(cin, cout, 3, stride), ConvBNAct(cout, cout, 3, act=False))
        self.short = nn.Identity() if stride == 1 and cin == cout else ConvBNAct(cin, cout, 1, stride, act=False)

    def forward(self, x):
        return F.relu(self.body(x) + self.short(x))


class InvertedResidual(nn.Module):
    """MobileNetV2's expand (1x1) -> depthwise (3x3) -> project (1x1), residual when shapes match."""

    def __init__(self, cin, cout, stride, expand=4):
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(ConvBNAct(cin, mid, 1), ConvBNAct(mid, mid, 3, stride, groups=mid),
                                  ConvBNAct(mid, cout, 1, act=False))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


BLOCKS = {"resnet": BasicBlock, "mobilenet": InvertedResidual}


class Encoder(nn.Module):
    """A stem at stride 2, then four stages each halving the size: features at strides 2..32."""

    def __init__(self, kind: str, in_channels: int, widths: tuple[int, ...], depths: tuple[int, ...]):
        super().__init__()
        if kind not in BLOCKS:
            raise ValueError(f"encoder must be one of {', '.join(BLOCKS)}; got {kind!r}")
        block = BLOCKS[kind]
        self.stem = ConvBNAct(in_channels, widths[0], 3, 2)
        stages, cin = [], widths[0]
        for cout, depth in zip(widths[1:], depths):
            layers = [block(cin, cout, 2)] + [block(cout, cout, 1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.channels = list(widths)

    def forward(self, x):
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


class DecoderBlock(nn.Module):
    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.conv = nn.Sequential(ConvBNAct(cin + cskip, cout), ConvBNAct(cout, cout))

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], 1))


@dataclass(frozen=True)
class CVUNetConfig:
    encoder: str = "mobilenet"
    width: float = 1.0
    depths: tuple[int, ...] = (1, 2, 2, 1)
    in_channels: int = 3

    def __post_init__(self):
        if self.encoder not in BLOCKS:
            raise ValueError(f"encoder must be one of {', '.join(BLOCKS)}; got {self.encoder!r}")
        if self.width <= 0:
            raise ValueError(f"width must be positive, got {self.width}")
        if len(self.depths) != 4 or min(self.depths) < 1:
            raise ValueError(f"depths must be four stage depths >= 1, got {self.depths}")
        if self.in_channels not in (3, 4):
            raise ValueError(f"in_channels must be 3 (RGB) or 4 (RGB + coarse alpha), got {self.in_channels}")


class CVUNet(nn.Module):
    """float32 [N, in_channels, H, W] normalised image (and, for refiners, coarse alpha) ->
    alpha float32 [N, 1, H, W] in [0, 1].

    A refiner (in_channels 4, the 4th channel the coarse alpha in [0, 1]) predicts a correction of
    the coarse alpha's logit: with its head at zero it returns the coarse alpha unchanged, so
    training starts from the engine's answer and learns only where the edge is wrong."""

    BASE = (32, 48, 96, 192, 320)

    def __init__(self, config: CVUNetConfig = CVUNetConfig()):
        super().__init__()
        self.config = config
        widths = tuple(_ch(c, config.width) for c in self.BASE)
        self.encoder = Encoder(config.encoder, config.in_channels, widths, config.depths)
        enc = self.encoder.channels  # strides 2, 4, 8, 16, 32
        dec = [enc[3], enc[2], enc[1], enc[0]]
        blocks, cin = [], enc[4]
        for cskip, cout in zip(reversed(enc[:4]), dec):
            blocks.append(DecoderBlock(cin, cskip, cout))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        # The last step back to full resolution sees the input itself, for crisp edges.
        self.full = DecoderBlock(cin, config.in_channels, _ch(16, config.width))
        self.head = nn.Conv2d(_ch(16, config.width), 1, 3, padding=1)
        if config.in_channels == 4:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x):
        feats = self.encoder(x)
        d = feats[-1]
        for block, skip in zip(self.decoder, reversed(feats[:-1])):
            d = block(d, skip)
        logit = self.head(self.full(d, x))
        if self.config.in_channels == 4:
            coarse = x[:, 3:4].clamp(1e-3, 1 - 1e-3)
            logit = logit + torch.log(coarse) - torch.log1p(-coarse)
        return torch.sigmoid(logit)


PRESETS: dict[str, CVUNetConfig] = {
    "cvunet-l": CVUNetConfig(encoder="resnet", width=1.0, depths=(2, 2, 2, 2)),
    "cvunet-s": CVUNetConfig(encoder="mobilenet", width=1.0, depths=(1, 2, 2, 1)),
    "cvunet-xs": CVUNetConfig(encoder="mobilenet", width=0.5, depths=(1, 1, 1, 1)),
}


def build(preset: str, in_channels: int = 3) -> CVUNet:
    if preset not in PRESETS:
        raise ValueError(f"unknown CV-UNet preset {preset!r}; presets: {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    return CVUNet(CVUNetConfig(cfg.encoder, cfg.width, cfg.depths, in_channels))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, size: tuple[int, int] = (512, 512), in_channels: int | None = None) -> float:
    """FLOPs (2 x multiply-adds) of convolutions for one image of `size`, counted with hooks on a
    real forward pass (so the count follows the actual shapes); any module (a CV-UNet, a pruned
    U²-Net-p). in_channels: default the CV-UNet config's, else 3."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += 2 * output.numel() * (module.in_channels // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels or getattr(getattr(model, "config", None), "in_channels", 3), *size))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return float(total)


def config_dict(config: CVUNetConfig) -> dict:
    return asdict(config)
