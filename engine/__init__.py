"""The runtime: model specs and zoo, backends, pre/post-processing, tiling, the file pipeline.

Never imports torch, TensorFlow, TensorRT or cuda-python at import time.
"""
