"""The dynamic batcher and its ring, measured: images/s and model busy fraction by batch size and
ring depth, with producers that do real per-image CPU work (resize and normalise a decoded photo)
while the model runs.

Depth 1 means no overlap: a slot must come back before the next batch can be staged. Depth 3
lets one batch be staged while one computes and one is read back. On the CPU the launch itself
computes, so depth should not matter there; on a GPU depth 3 should raise the busy fraction.

    python -m cvmatte.benchmarks.batching                               # u2netp, ONNX Runtime CPU
    python -m cvmatte.benchmarks.batching --backend torch --preset cvunet-s --device cuda \
        --precision fp16 --cuda-graphs --size 512                        # a GPU, no TensorRT needed
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np

from cvmatte.samples import PHOTOS, load_photo
from cvmatte.engine import preprocess, zoo
from cvmatte.engine.backends import create_backend
from cvmatte.engine.batching import DynamicBatcher
from cvmatte.engine.spec import ModelSpec


def make_backend(args):
    if args.preset:  # random weights: speed does not depend on them
        import torch

        from cvmatte.engine.nets.cvunet import build
        from cvmatte.engine.backends.torch_backend import TorchBackend

        torch.manual_seed(0)
        spec = ModelSpec(name=args.preset, input_size=(args.size, args.size), input_name="image", output_name="alpha",
                         dynamic_hw=True)
        return TorchBackend(build(args.preset), spec, device=args.device, precision=args.precision,
                            cuda_graphs=args.cuda_graphs), spec
    resolved = zoo.resolve(args.model)
    return create_backend(resolved, args.backend, args.device), resolved.spec


def run_config(backend, spec, photos, batch: int, depth: int, inputs: int, producers: int = 2) -> dict:
    size = (spec.input_size[0], spec.input_size[1])
    with DynamicBatcher(backend, batch_size=batch, depth=depth, flush_ms=2.0) as batcher:
        batcher.run(np.stack([preprocess.coarse_input(photos[0], spec)] * batch))  # warm-up: first launches, graphs
        batcher.stats.__init__(batch_size=batch)
        futures = []
        lock = threading.Lock()

        def produce(k):
            for i in range(k, inputs, producers):
                x = preprocess.normalize(preprocess.resize(photos[i % len(photos)], size), spec)
                f = batcher.submit(x)
                with lock:
                    futures.append(f)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for f in futures:
            f.result()
        wall = time.perf_counter() - t0
        s = batcher.stats
        return {"batch": batch, "depth": depth, "inputs": inputs, "seconds": wall, "images_per_s": inputs / wall,
                "model_busy": s.busy_fraction, "fill": s.fill, "batches": s.batches,
                "compute_ms_per_image": s.busy_s / max(1, s.items) * 1e3}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--model", default="u2netp")
    ap.add_argument("--preset", help="a CV-UNet preset with random weights (torch backend)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--cuda-graphs", action="store_true")
    ap.add_argument("--size", type=int, default=320, help="input side for --preset")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--inputs", type=int, default=48)
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    backend, spec = make_backend(args)
    photos = [load_photo(p) for p in PHOTOS]
    print(f"{backend.describe()}, {spec.name} at {spec.input_size[0]}x{spec.input_size[1]}, {args.inputs} inputs, "
          "2 producer threads resizing and normalising real photos")
    print("| batch | ring depth | images/s | model busy | fill | compute ms/image |\n|---|---|---|---|---|---|")
    rows = []
    for batch in args.batches:
        for depth in args.depths:
            r = run_config(backend, spec, photos, batch, depth, args.inputs)
            rows.append(r)
            print(f"| {batch} | {depth} | {r['images_per_s']:.1f} | {r['model_busy']:.0%} | {r['fill']:.0%} | "
                  f"{r['compute_ms_per_image']:.2f} |", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"backend": backend.describe(), "model": spec.name, "size": spec.input_size,
                                        "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
