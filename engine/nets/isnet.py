"""IS-Net in torch (Qin et al. 2022, "Highly Accurate Dichotomous Image Segmentation", the
`ISNetDIS` of github.com/xuebinqin/DIS): a stride-2 3x3 input convolution, six stages of residual
U-blocks (RSU-7, RSU-6, RSU-5, RSU-4, RSU-4F, RSU-4F, as U²-Net's but wider), a mirrored decoder
and one side output, a 3x3 convolution on the last decoder stage upsampled to the input's size.

The zoo's `isnet-general-use.onnx` keeps only that first side output (the others are dropped) and
has each convolution's batch norm folded into it, so every REBNCONV is a biased 3x3 convolution
and a ReLU, as in `u2net.py`, whose RSU block this module reuses. The graph has no pooling and
no ReLU after the input convolution: stage 1 reads the stride-2 convolution directly. `from_onnx`
reads the weights from the file's initializers in the order the graph runs the convolutions. The
graph's Resize sizes are constants for 1024x1024 inputs; the port takes them from the skip tensors
instead, which is the same at 1024 and lets it run (and export) at any size.

torch is imported here; the engine imports this module only when the torch backend runs it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .u2net import RSU, _pool, _up, conv_layers


class ISNet(nn.Module):
    """float32 [N, 3, H, W] normalised RGB -> alpha float32 [N, 1, H, W] in [0, 1] (the first side
    output d1, the only output of the zoo's ONNX file)."""

    #: (height, cin, mid, cout, dilated) per stage: encoder stages 1-6, then decoder 5d..1d.
    ENCODER = ((7, 64, 32, 64, False), (6, 64, 32, 128, False), (5, 128, 64, 256, False),
               (4, 256, 128, 512, False), (4, 512, 256, 512, True), (4, 512, 256, 512, True))
    DECODER = ((4, 1024, 256, 512, True), (4, 1024, 128, 256, False), (5, 512, 64, 128, False),
               (6, 256, 32, 64, False), (7, 128, 16, 64, False))
    #: Convolutions in one forward pass: the input one, 14+12+10+8+8+8 in the encoder,
    #: 8+8+10+12+14 in the decoder, the side output.
    CONVS = 114

    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(3, 64, 3, stride=2, padding=1)
        self.encoder = nn.ModuleList([RSU(*s) for s in self.ENCODER])
        self.decoder = nn.ModuleList([RSU(*s) for s in self.DECODER])
        self.side = nn.Conv2d(64, 1, 3, padding=1)

    def logit(self, x) -> torch.Tensor:
        """The alpha's logit [N, 1, H, W] at the input's size (before the sigmoid)."""
        skips, hx = [], self.conv_in(x)
        for i, stage in enumerate(self.encoder):
            hx = stage(_pool(hx) if i else hx)
            skips.append(hx)
        d = skips[-1]
        for stage, skip in zip(self.decoder, reversed(skips[:-1])):
            d = stage(torch.cat([_up(d, skip), skip], 1))
        # The graph resizes the side convolution's output (at half the input's size), then applies the sigmoid.
        return _up(self.side(d), x)

    def forward(self, x):
        return torch.sigmoid(self.logit(x))


def from_onnx(path: str | Path) -> ISNet:
    """An ISNet holding the weights of an ONNX IS-Net (the zoo's `isnet-general-use.onnx`: BN
    folded, 114 convolutions). Raises ValueError when the file's convolutions do not match the
    architecture one for one (another network, or an IS-Net of other widths)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    # Counted before building the 44 M-parameter module: most files that are not an IS-Net stop here.
    if len(convs) != ISNet.CONVS:
        raise ValueError(f"{path}: {len(convs)} convolutions, IS-Net has {ISNet.CONVS}: not an IS-Net")
    weights = {init.name: init for init in graph.initializer}
    model = ISNet()
    with torch.no_grad():
        for node, layer in zip(convs, conv_layers(model)):
            if len(node.input) < 3 or node.input[1] not in weights or node.input[2] not in weights:
                raise ValueError(f"{path}: convolution {node.name} has no constant weight and bias: not an IS-Net")
            w = torch.from_numpy(numpy_helper.to_array(weights[node.input[1]]).astype("float32"))
            b = torch.from_numpy(numpy_helper.to_array(weights[node.input[2]]).astype("float32"))
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            got = (tuple(w.shape), list(attrs.get("dilations", [1, 1])), list(attrs.get("strides", [1, 1])))
            want = (tuple(layer.weight.shape), list(layer.dilation), list(layer.stride))
            if got != want:
                raise ValueError(f"{path}: convolution {node.name} is {got[0]} dilation {got[1]} stride {got[2]}, "
                                 f"IS-Net expects {want[0]} dilation {want[1]} stride {want[2]}: not an IS-Net")
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    return model.eval()


def port_from_onnx(path: str | Path) -> nn.Module:
    """The native torch port of an ONNX file: U²-Net-p or IS-Net, whichever its convolutions match.
    Raises ValueError with both refusals when it is neither."""
    from . import u2net

    # IS-Net first: its refusal of a U²-Net-p file costs one load of a small file, while the other
    # order would load IS-Net's 176 MB twice.
    try:
        return from_onnx(path)
    except ValueError as not_isnet:
        try:
            return u2net.from_onnx(path)
        except ValueError as not_u2net:
            raise ValueError(f"{not_u2net}; {not_isnet}") from None
