"""The catalog on Ray Data: the driver validates, plans and writes the manifest; the images go
through `map_batches` to a pool of actors, one per model slot (a GPU, or a group of CPU cores),
each building its engine once with the factory it is given and running the same Runner as a
local run. No scheduler of our own: Ray Data streams the entries and back-pressures the actors.

The output folder must be shared by the driver and the actors (one machine, or a network file
system), as the actors write the cut-outs and the cache themselves; only rows travel back.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Callable, Iterable

import numpy as np

from ..errors import DeviceError
from ..matting import MattingEngine
from .runner import FileSink, Row, Runner
from .validate import Entry


class _MatteActor:
    """One Ray actor: builds the engine once, then mattes batches of entries."""

    def __init__(self, factory: Callable[[], MattingEngine], config: dict):
        engine = factory()
        self.runner = Runner(engine, config.pop("spec"), FileSink(config.pop("layout")), refiner=engine.refiner,
                             **config)

    def __call__(self, batch: dict) -> dict:
        entries = [Entry(**json.loads(str(text))) for text in batch["entry"]]
        rows = [json.dumps(r.to_dict()) for r in self.runner.run(entries)]
        return {"row": np.array(rows, dtype=object)}


def ray_executor(factory: Callable[[], MattingEngine], address: str | None = None, actors: int | None = None,
                 cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0, batch_size: int = 4) -> Callable:
    """-> executor(runner, entries) for run.run_catalog. factory: builds the engine inside an
    actor (picklable: a module-level function or a functools.partial of one). address: a running
    cluster ("auto" or "ray://host:10001"); None starts a local one on this machine."""
    try:
        import ray
    except ImportError:
        raise DeviceError("--ray needs Ray Data: pip install 'cvmatte[ray]'") from None

    def execute(runner: Runner, entries: Iterable[Entry]) -> Iterable[Row]:
        entries = list(entries)  # the driver takes (claims) every input it hands to the actors
        if not entries:
            return
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
        n = actors or max(1, int(ray.cluster_resources().get("GPU" if gpus_per_actor else "CPU", 1)
                                 // max(gpus_per_actor or cpus_per_actor, 1e-9)))
        config = dict(spec=runner.spec, layout=runner.sink.layout, model_id=runner.model_id,
                      backend_name=runner.backend_name, run_id=runner.run_id, cache=runner.cache,
                      thresholds=runner.thresholds, settings=runner.settings)
        ds = ray.data.from_items([{"entry": json.dumps({k: v for k, v in asdict(e).items() if k != "data"})}
                                  for e in entries])
        ds = ds.map_batches(_MatteActor, batch_size=batch_size, concurrency=n, num_cpus=cpus_per_actor,
                            num_gpus=gpus_per_actor or None,
                            fn_constructor_kwargs={"factory": factory, "config": config})
        for item in ds.iter_rows():
            yield Row.from_dict(json.loads(item["row"]))

    return execute
