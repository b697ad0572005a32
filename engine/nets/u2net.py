"""U²-Net-p in torch (Qin et al. 2020, "U²-Net: Going Deeper with Nested U-Structure for Salient
Object Detection"): six stages of residual U-blocks (RSU-7, RSU-6, RSU-5, RSU-4, RSU-4F, RSU-4F),
a mirrored decoder, a side output per decoder stage and a 1x1 convolution fusing the six.

The packaged `u2netp.onnx` was exported with each convolution's batch norm folded into it, so
every REBNCONV here is a biased 3x3 convolution and a ReLU; `from_onnx` reads the weights from that
file's initializers in the order the graph runs the convolutions. The channel counts are not
fixed by the class: `load_layout` rebuilds every convolution at the shape a state dict holds,
which is how structurally pruned students (fewer channels per layer) load with the same code.

torch is imported here; the engine imports this module only when the torch backend runs it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class REBNCONV(nn.Sequential):
    """3x3 convolution (batch norm folded in) and ReLU; dilation keeps the size."""

    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True))


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # Bilinear, half-pixel centres: the ONNX file's Resize (linear, pytorch_half_pixel).
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, 2, ceil_mode=True)


class RSU(nn.Module):
    """Residual U-block of `height` levels: an input convolution, an encoder of height-1 levels
    (pooling between them), a dilated bottom, a decoder back up with concatenated skips, and the
    input convolution's output added back. RSU-4F (`dilated=True`) replaces pooling by growing
    dilations (1, 2, 4, 8) and never changes the resolution."""

    def __init__(self, height: int, cin: int, mid: int, cout: int, dilated: bool = False):
        super().__init__()
        self.height, self.dilated = height, dilated
        dil = [2 ** i for i in range(height)] if dilated else [1] * (height - 1) + [2]
        self.conv_in = REBNCONV(cin, cout)
        self.enc = nn.ModuleList([REBNCONV(cout if i == 0 else mid, mid, dil[i]) for i in range(height)])
        self.dec = nn.ModuleList([REBNCONV(2 * mid, cout if i == 0 else mid, dil[i]) for i in range(height - 1)])

    def forward(self, x):
        hxin = self.conv_in(x)
        feats, hx = [], hxin
        for i, conv in enumerate(self.enc):
            if i > 0 and not self.dilated and i < self.height - 1:
                hx = _pool(hx)
            hx = conv(hx)
            feats.append(hx)
        d = feats[-1]
        for i in range(self.height - 2, -1, -1):
            skip = feats[i]
            if not self.dilated and i < self.height - 2:
                d = _up(d, skip)
            d = self.dec[i](torch.cat([d, skip], 1))
        return d + hxin


class U2NetP(nn.Module):
    """float32 [N, 3, H, W] normalised RGB -> alpha float32 [N, 1, H, W] in [0, 1] (the fused map
    d0, as the packaged ONNX file's first output). `side_outputs=True` returns all seven maps
    (d0 fused, d1..d6), as U²-Net is trained (deep supervision)."""

    #: (height, dilated) of the encoder's six stages; the decoder mirrors stages 1-5.
    STAGES = ((7, False), (6, False), (5, False), (4, False), (4, True), (4, True))

    def __init__(self, mid: int = 16, out: int = 64):
        super().__init__()
        self.side_outputs = False
        self.encoder = nn.ModuleList([RSU(h, 3 if i == 0 else out, mid, out, d) for i, (h, d) in enumerate(self.STAGES)])
        self.decoder = nn.ModuleList([RSU(h, 2 * out, mid, out, d) for h, d in self.STAGES[4::-1]])
        self.side = nn.ModuleList([nn.Conv2d(out, 1, 3, padding=1) for _ in range(6)])
        self.fuse = nn.Conv2d(6, 1, 1)

    def logits(self, x) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The fused logit [N, 1, H, W] and the six side logits (d1..d6) at the input's size:
        what training needs, since a loss on saturated sigmoids has no gradient left."""
        skips, hx = [], x
        for i, stage in enumerate(self.encoder):
            hx = stage(_pool(hx) if i else hx)
            skips.append(hx)
        d, dec = skips[-1], [skips[-1]]
        for stage, skip in zip(self.decoder, reversed(skips[:-1])):
            d = stage(torch.cat([_up(d, skip), skip], 1))
            dec.append(d)
        # dec: stage 6 output, then decoder stages 5d..1d; side k reads the stage at stride 2^(k-1).
        full = dec[-1]
        sides = [self.side[0](full)] + [_up(self.side[k](dec[-1 - k]), full) for k in range(1, 6)]
        return self.fuse(torch.cat(sides, 1)), sides

    def forward(self, x):
        fused, sides = self.logits(x)
        if self.side_outputs:
            return [torch.sigmoid(s) for s in [fused, *sides]]
        return torch.sigmoid(fused)


def conv_layers(module: nn.Module) -> list[nn.Conv2d]:
    """The module's convolutions in the order one forward pass runs them (hooks on a real pass)."""
    order: list[nn.Conv2d] = []
    handles = [m.register_forward_hook(lambda m, i, o: order.append(m))
               for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            module(torch.zeros(1, 3, 64, 64))
    finally:
        for h in handles:
            h.remove()
    return order


def from_onnx(path: str | Path) -> U2NetP:
    """A U2NetP holding the weights of an ONNX U²-Net-p (the rembg `u2netp.onnx` layout: BN folded,
    119 convolutions). Raises ValueError when the file's convolutions do not match the
    architecture one for one (another network, or a U²-Net of other widths)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {init.name: init for init in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    model = U2NetP()
    layers = conv_layers(model)
    if len(convs) != len(layers):
        raise ValueError(f"{path}: {len(convs)} convolutions, U²-Net-p has {len(layers)}: not a U²-Net-p")
    with torch.no_grad():
        for node, layer in zip(convs, layers):
            if len(node.input) < 3 or node.input[1] not in weights or node.input[2] not in weights:
                raise ValueError(f"{path}: convolution {node.name} has no constant weight and bias")
            w = torch.from_numpy(numpy_helper.to_array(weights[node.input[1]]).copy())
            b = torch.from_numpy(numpy_helper.to_array(weights[node.input[2]]).copy())
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if w.shape != layer.weight.shape or list(attrs.get("dilations", [1, 1])) != list(layer.dilation):
                raise ValueError(f"{path}: convolution {node.name} is {tuple(w.shape)} dilation "
                                 f"{attrs.get('dilations')}, U²-Net-p expects {tuple(layer.weight.shape)} "
                                 f"dilation {list(layer.dilation)}: not a U²-Net-p")
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    return model.eval()


def layout(module: nn.Module) -> dict[str, list[int]]:
    """Every convolution's weight shape by name: what a pruned network's checkpoint stores."""
    return {name: list(m.weight.shape) for name, m in module.named_modules() if isinstance(m, nn.Conv2d)}


def load_layout(shapes: dict[str, list[int]]) -> U2NetP:
    """A U2NetP whose convolutions have the given weight shapes (out, in, k, k); the topology is the
    class's, only the widths change."""
    model = U2NetP()
    for name, m in list(model.named_modules()):
        if not isinstance(m, nn.Conv2d):
            continue
        if name not in shapes:
            raise ValueError(f"layout has no convolution {name!r}")
        out, cin = shapes[name][:2]
        if (out, cin) != (m.out_channels, m.in_channels):
            new = nn.Conv2d(cin, out, m.kernel_size, padding=m.padding, dilation=m.dilation)
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, new)
    return model
