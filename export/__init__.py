"""Export toolchain: converters to ONNX, FP16/INT8, TensorRT engines, parity reports, bundles."""

from cvmatte.engine import zoo


def _convert_cv_unet_graph(graph_path, dest, name: str = "cv-unet-universal"):
    from .tf_graph import convert_cv_unet_graph  # tensorflow and tf2onnx load only when converting

    return convert_cv_unet_graph(graph_path, dest, name=name)


# The runtime never imports the toolchain: the zoo fetches cv-unet-universal through this hook.
zoo.register_converter("tf_graph", _convert_cv_unet_graph)
