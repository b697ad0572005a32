"""The catalog on Ray Data: the driver validates, plans and writes the manifest; the images go
through `map_batches` to a pool of actors, one per model slot (a GPU, or a group of CPU cores),
each holding one loaded model and running the same catalog.Worker as the local thread pool. No
scheduler of our own: Ray Data streams the entries and back-pressures the actors.

The output folder must be shared by the driver and the actors (one machine, or a network file
system), as the actors write the cut-outs and the cache themselves; only manifest rows travel back.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Callable, Iterable

import numpy as np

from .catalog import CatalogOptions, Entry, Worker
from .errors import DeviceError


class _MatteActor:
    """One Ray actor: loads the model once, then mattes batches of entries."""

    def __init__(self, matter_kwargs: dict, model_id: str, out: str, options: CatalogOptions):
        from cvmatte import Matter

        matter = Matter(**matter_kwargs)
        self.worker = Worker(matter.engine, model_id, out, options)

    def __call__(self, batch: dict) -> dict:
        rows = []
        for text, run_id in zip(batch["entry"], batch["run"]):
            rows.append(json.dumps(self.worker(Entry(**json.loads(str(text))), str(run_id))))
        return {"row": np.array(rows, dtype=object)}


def ray_executor(matter_kwargs: dict, model_id: str, options: CatalogOptions, address: str | None = None,
                 actors: int | None = None, cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0,
                 batch_size: int = 4) -> Callable:
    """-> executor(worker, entries, run_id) for catalog.run_catalog. address: a running cluster
    ("auto" or "ray://host:10001"); None starts a local one on this machine."""
    try:
        import ray
    except ImportError:
        raise DeviceError("--ray needs Ray Data: pip install 'cvmatte[ray]'") from None

    def run(worker: Worker, entries: list[Entry], run_id: str) -> Iterable[dict]:
        if not entries:
            return
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
        n = actors or max(1, int(ray.cluster_resources().get("GPU" if gpus_per_actor else "CPU", 1)
                                 // max(gpus_per_actor or cpus_per_actor, 1e-9)))
        kwargs = dict(matter_kwargs)
        kwargs.setdefault("threads", max(1, int(cpus_per_actor)))
        ds = ray.data.from_items([{"entry": json.dumps(asdict(e)), "run": run_id} for e in entries])
        ds = ds.map_batches(_MatteActor, batch_size=batch_size, concurrency=n, num_cpus=cpus_per_actor,
                            num_gpus=gpus_per_actor or None,
                            fn_constructor_kwargs={"matter_kwargs": kwargs, "model_id": model_id,
                                                   "out": str(worker.out), "options": options})
        for item in ds.iter_rows():
            yield json.loads(item["row"])

    return run
