"""Export toolchain: converters to ONNX, FP16/INT8, TensorRT engines, parity reports, bundles."""
