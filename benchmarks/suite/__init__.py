"""`cvmatte bench`: latency, catalog throughput and accuracy, side by side with the tools people use
today, each figure beside the machine's physical limit; results as JSON, a markdown table and PNG
plots under ./bench-results/<machine>/ in the current directory, or --out DIR (the committed
results: --out benchmarks/results/<machine>).

- Latency: model x backend x precision x resolution x batch; median, p90, p99 after warm-up.
  ONNX Runtime's run() returns after the device has finished (its CUDA provider synchronises), so
  wall-clock timing around it is the GPU time plus the copies.
- Limit: FLOPs of the model's convolutions at that size (ONNX shape inference) over the machine's
  peak, measured on the spot with a large float32 matrix product; bandwidth from a large copy.
- Catalog throughput: decode -> matte -> encode -> write on a folder, in images/s and MP/s, with
  CPU utilisation and peak resident memory sampled during the run.
- Accuracy: SAD, MSE, gradient and connectivity errors (alphamatting.com definitions) against the
  exact alpha of synthetic product shots at 1, 4 and 16 MP (real photos for texture and backdrop).
- Peers, same images, same run: the plain rembg-style loop on the same model; the ModelScope
  whole-graph pipeline when the CV-UNet graph is installed; our configurations (tiles on/off,
  guided or learned refiner, FP32/FP16/INT8, distilled students).

    cvmatte bench [--quick] [--models u2netp cvunet-s] [--backends onnxruntime] [--out DIR]

One module per measurement: config (the run's settings, the machine), peak (the machine's limits),
resources (CPU, memory and GPU use during a run), variants (what is compared), latency, throughput,
accuracy, report (JSON, markdown, plots) and runner (`run`, which does them in order).
"""

from cvmatte.benchmarks.suite.config import RESULTS, BenchConfig, machine_info, machine_slug, results_dir
from cvmatte.benchmarks.suite.peak import measured_peak
from cvmatte.benchmarks.suite.resources import ResourceSampler
from cvmatte.benchmarks.suite.runner import run

__all__ = ["RESULTS", "BenchConfig", "ResourceSampler", "machine_info", "machine_slug", "measured_peak", "results_dir",
           "run"]
