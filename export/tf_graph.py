"""ModelScope's CV-UNet TensorFlow frozen graph -> ONNX, and its core network -> a batched, tiled-
ready ONNX with a spec derived from what the graph actually does.

The graph (`tf_graph.pb`) maps `input_image:0` (H x W x 3 float, 0..255, RGB) to `output_png:0`
(H x W x 4 uint8 RGBA), with its resize and normalisation inside. We convert all of it with
tf2onnx, then cut out the core: from the input of its first convolution to the output of its last
sigmoid. The core's input size, channel order, mean and std are measured by running the graph's
own preprocessing on probe images, never assumed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from cvmatte.engine.errors import ModelError
from cvmatte.engine.onnx_graph import make_dynamic
from cvmatte.engine.spec import ModelSpec

from .onnx_passes import save_with_spec

INPUT = "input_image:0"
OUTPUT = "output_png:0"
OPSET = 17  # inside TensorRT 10.3 (JetPack 6) and 11.x's parser range; Resize-heavy nets are safe here


@dataclass
class Converted:
    full: Path
    core: Path
    spec: ModelSpec


def load_graph_def(path: Path):
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(Path(path).read_bytes())
    return graph_def


def run_tf_graph(graph_def, image: np.ndarray) -> np.ndarray:
    """The graph's own output for one RGB uint8 image: uint8 [H, W, 4]."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        return sess.run(OUTPUT, {INPUT: image.astype(np.float32)})


def _to_onnx(graph_def) -> onnx.ModelProto:
    import tf2onnx

    model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=[INPUT], output_names=[OUTPUT], opset=OPSET)
    # The extractor needs a declared type for every tensor it cuts at.
    model = onnx.shape_inference.infer_shapes(model)
    known = {v.name for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    for node in model.graph.node:
        for out in node.output:
            if out and out not in known:
                model.graph.value_info.append(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
    return model


def _core_boundaries(model: onnx.ModelProto) -> tuple[str, str]:
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    sigmoids = [n for n in model.graph.node if n.op_type == "Sigmoid"]
    if not convs or not sigmoids:
        raise ModelError("the graph has no Conv or no Sigmoid: not a CV-UNet-shaped graph")
    return convs[0].input[0], sigmoids[-1].output[0]


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _probe_preprocessing(full: onnx.ModelProto, core_input: str) -> dict:
    """Run the graph from its input to the core's input on flat probe images and read off the
    size, the channel order and the per-channel affine normalisation."""
    pre = onnx.utils.Extractor(full).extract_model([INPUT], [core_input])

    def probe(rgb):
        img = np.zeros((96, 128, 3), np.float32) + np.asarray(rgb, np.float32)
        (x,) = _run(pre, {INPUT: img})
        if x.ndim != 4 or x.shape[1] != 3:
            raise ModelError(f"the core's input is shaped {x.shape}, expected [1, 3, h, w]")
        return x[0].reshape(3, -1).mean(axis=1), x.shape[2:]

    black, size = probe((0, 0, 0))
    white, _ = probe((255, 255, 255))
    grey, _ = probe((128, 128, 128))
    red, _ = probe((255, 0, 0))
    if np.any(np.abs(white - black) < 1e-6):
        raise ModelError("the preprocessing does not respond to the image: cannot derive a normalisation")
    if np.abs(grey - (black + (white - black) * 128 / 255)).max() > 1e-3 * np.abs(white - black).max():
        raise ModelError("the preprocessing is not a per-channel affine map of the pixels: cannot derive mean/std")
    responds = int(np.argmax(np.abs(red - black)))
    order = {0: "RGB", 2: "BGR"}.get(responds)
    if order is None:
        raise ModelError("the red channel lands on the middle channel: unknown channel order")
    std_model = 1.0 / (white - black)  # in model channel order
    mean_model = -black * std_model  # in model channel order, as the spec lists them
    return {"size": (int(size[0]), int(size[1])), "order": order,
            "mean": tuple(float(v) for v in mean_model), "std": tuple(float(v) for v in std_model)}


def _extract_core(full: onnx.ModelProto, core_input: str, core_output: str) -> onnx.ModelProto:
    core = onnx.utils.Extractor(full).extract_model([core_input], [core_output])
    # tf2onnx keeps TensorFlow's NHWC outside convolutions: bring a [N, H, W, 1] alpha to NCHW.
    shape = [d.dim_value or d.dim_param for d in core.graph.output[0].type.tensor_type.shape.dim]
    if len(shape) == 4 and shape[-1] == 1 and shape[1] != 1:
        out = core.graph.output[0]
        nchw = out.name + "_nchw"
        core.graph.node.append(helper.make_node("Transpose", [out.name], [nchw], perm=[0, 3, 1, 2]))
        new_out = helper.make_tensor_value_info(nchw, out.type.tensor_type.elem_type, None)
        del core.graph.output[:]
        core.graph.output.append(new_out)
    return core


def convert_tf_graph(graph_path: Path, out_dir: Path, name: str = "cv-unet-universal") -> Converted:
    """Writes out_dir/<name>.full.onnx (the whole graph) and out_dir/<name>.onnx (the core) with
    its spec; returns both paths and the spec."""
    graph_path, out_dir = Path(graph_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    graph_def = load_graph_def(graph_path)
    full = _to_onnx(graph_def)
    core_input, core_output = _core_boundaries(full)
    pre = _probe_preprocessing(full, core_input)
    core = _extract_core(full, core_input, core_output)
    # Give the core's I/O plain names and a symbolic batch.
    core = _rename_io(core, "image", "alpha")
    core = make_dynamic(core, batch=True, hw=False)
    graph_sha = hashlib.sha256(graph_path.read_bytes()).hexdigest()
    import tf2onnx

    spec = ModelSpec(
        name=name, input_size=pre["size"], input_name="image", output_name="alpha", dynamic_batch=True,
        dynamic_hw=False, channel_order=pre["order"], mean=pre["mean"], std=pre["std"], output_activation="none",
        tileable=False, source=f"TensorFlow graph {graph_path.name} (sha256 {graph_sha}) via tf2onnx {tf2onnx.__version__} "
        f"opset {OPSET}; core from the first Conv's input ({core_input}) to the last Sigmoid's output ({core_output})",
        notes="normalisation and size measured by running the graph's own preprocessing on probe images",
    )
    full_path = out_dir / f"{name}.full.onnx"
    onnx.save(full, str(full_path))
    core_path = out_dir / f"{name}.onnx"
    spec = save_with_spec(core, core_path, spec)
    _check_batch(core_path, spec)
    return Converted(full_path, core_path, spec)


def _rename_io(model: onnx.ModelProto, input_name: str, output_name: str) -> onnx.ModelProto:
    old_in, old_out = model.graph.input[0].name, model.graph.output[0].name
    for node in model.graph.node:
        node.input[:] = [input_name if i == old_in else i for i in node.input]
        node.output[:] = [output_name if o == old_out else o for o in node.output]
    model.graph.input[0].name = input_name
    model.graph.output[0].name = output_name
    return model


def _check_batch(path: Path, spec: ModelSpec) -> None:
    """A core whose reshapes baked batch 1 in cannot batch; say so now, not at run time."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.zeros((2, 3, *spec.input_size), np.float32)
    try:
        (y,) = s.run([spec.output_name], {spec.input_name: x})
    except Exception as e:
        raise ModelError(f"{path}: the extracted core does not run with batch 2 ({e})") from None
    if y.shape[0] != 2 or y.shape[1] != 1:
        raise ModelError(f"{path}: the extracted core returned {y.shape} for batch 2, expected [2, 1, h, w]")


def convert_cv_unet_graph(graph_path: Path, dest: Path, name: str = "cv-unet-universal") -> ModelSpec:
    """The zoo's hook: convert a downloaded tf_graph.pb into dest/<name>.onnx plus its spec."""
    return convert_tf_graph(graph_path, dest, name).spec
