"""A small TensorFlow frozen graph shaped like ModelScope's CV-UNet universal-matting graph:
`input_image` (H x W x 3 float, 0..255) -> resize -> normalise -> convolutions -> sigmoid ->
resize back -> RGBA uint8 `output_png`. Built by the tests, so the converter is tested offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = (64, 64)
MEAN = (0.5, 0.45, 0.4)
STD = (0.25, 0.2, 0.3)


def build_cv_unet_like_graph(path: Path, bgr: bool = False, seed: int = 0) -> Path:
    import tensorflow as tf

    tf1 = tf.compat.v1
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, None, 3], name="input_image")
        hw = tf.shape(x)[:2]
        img = tf.expand_dims(x, 0)
        if bgr:
            img = tf.reverse(img, axis=[-1])
        small = tf.image.resize(img, SIZE, method="bilinear")
        mean = np.array(MEAN[::-1] if bgr else MEAN, np.float32)
        std = np.array(STD[::-1] if bgr else STD, np.float32)
        net = (small / 255.0 - mean) / std

        def conv(x, weights, bias):
            return tf.nn.conv2d(x, tf.constant(weights.astype(np.float32)), strides=1, padding="SAME") + bias.astype(np.float32)

        # Colour features mixed with a little neighbourhood, then a decided (mostly 0 or 1) alpha:
        # smooth in the image like a real matte, so that quantization noise moves edges, not noise.
        w1 = rng.normal(0, 0.05, (3, 3, 3, 8))
        w1[1, 1] += rng.normal(0, 1.0, (3, 8))
        net = tf.nn.relu(conv(net, w1, rng.normal(0, 0.2, 8)))
        w2 = rng.normal(0, 0.03, (3, 3, 8, 8))
        w2[1, 1] += np.eye(8)
        net = tf.nn.relu(conv(net, w2, np.zeros(8)))
        w3 = rng.normal(0, 0.05, (3, 3, 8, 1))
        w3[1, 1, :, 0] += rng.normal(0, 12.0, 8)
        alpha = tf.sigmoid(conv(net, w3, np.zeros(1)))
        alpha = tf.image.resize(alpha, hw, method="bilinear")
        rgba = tf.concat([img if not bgr else tf.reverse(img, axis=[-1]), alpha * 255.0], axis=-1)[0]
        tf.cast(tf.clip_by_value(rgba + 0.5, 0, 255), tf.uint8, name="output_png")
    Path(path).write_bytes(graph.as_graph_def().SerializeToString())
    return Path(path)
