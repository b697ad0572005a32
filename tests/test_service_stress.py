"""A few hundred good and hostile requests at once (8 client threads) against one `cvmatte serve`
on loopback, small images so that it runs in a minute or two on two CPU cores. Every answer is a
status code the request deserves (or 503: busy), good requests get through with a retry, and the
server ends healthy, idle and within its memory."""

from __future__ import annotations

import random
import struct
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from tests.test_service import (CHUNKED, endless_upload, httpx, lying_zip, memory, peak_growth, server,  # noqa: F401
                                small_jpeg, zero_zip)
from cvmatte.samples import write_demo_photos  # noqa: E402


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says width x height (its CRC mended): a pixel bomb by its header."""
    data = bytearray(cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes())
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_a_few_hundred_mixed_requests(server, tmp_path):
    photos = write_demo_photos(tmp_path)
    images = [small_jpeg(p, 96) for p in photos[:3]]
    bombs = [("file", (f"z{i}.zip", zero_zip(19, 1_900_000))) for i in range(5)]
    liar = lying_zip(1000, 200 * 2 ** 20)
    pixel_bomb = png_claiming(20000, 20000)
    rng = random.Random(0)

    def retried(send, attempts=200):
        """Retried while the server says 503 (bounded). -> (last response, 503s seen)."""
        busy = 0
        for _ in range(attempts):
            r = send()
            if r.status_code != 503:
                return r, busy
            busy += 1
            assert r.headers.get("retry-after") == "1"
            time.sleep(0.2 + 0.3 * rng.random())
        return r, busy

    def post(path, files, data=None, timeout=120):
        return httpx.post(server + path, files=files, data=data, timeout=timeout)

    def matte():
        return retried(lambda: post("/v1/matte", {"file": ("p.jpg", rng.choice(images))}))

    def background():
        return retried(lambda: post("/v1/matte", {"file": ("p.jpg", rng.choice(images))},
                                    {"output": "background", "canvas": "200x160"}))

    def batch():
        return retried(lambda: post("/v1/batch", [("file", (f"p{i}.jpg", im)) for i, im in enumerate(images[:2])]))

    def job():
        r, busy = retried(lambda: post("/v1/jobs", [("file", (f"p{i}.jpg", im)) for i, im in enumerate(images[1:])]))
        if r.status_code != 200:
            return r, busy
        j = r.json()
        for _ in range(1200):  # bounded: 0.1 s apart
            state = httpx.get(f"{server}/v1/jobs/{j['id']}", headers={"X-Job-Token": j["token"]}, timeout=30)
            if state.status_code != 200 or state.json()["state"] in ("done", "failed"):
                break
            time.sleep(0.1)
        if state.status_code != 200 or state.json()["state"] != "done":
            return state, busy
        return httpx.get(server + state.json()["zip"], timeout=60), busy

    def health():
        return httpx.get(server + "/health", timeout=60), 0

    def chunked(path):
        return httpx.post(server + path, content=endless_upload([0], 16 if path == "/v1/matte" else 160),
                          headers=CHUNKED, timeout=120)

    good = {"matte": matte, "background": background, "batch": batch, "job": job, "health": health}
    # Each hostile request with the answers it deserves; 503 where it meets a full house first.
    hostile = {
        "canvas 8000x8000": (lambda: post("/v1/matte", {"file": ("p.jpg", images[0])},
                                          {"output": "background", "canvas": "8000x8000"}), {400, 503}),
        "five zips of zeros": (lambda: post("/v1/batch", bombs), {413, 503}),
        "a zip that lies": (lambda: post("/v1/jobs", {"file": ("liar.zip", liar)}), {413, 422, 503}),
        "endless chunked image": (lambda: chunked("/v1/matte"), {413, 503}),
        "endless chunked batch": (lambda: chunked("/v1/batch"), {413, 503}),
        "not an image": (lambda: post("/v1/matte", {"file": ("x.png", b"<html>" * 100)}), {415, 503}),
        "truncated jpeg": (lambda: post("/v1/matte", {"file": ("t.jpg", images[0][: len(images[0]) // 2])}),
                           {422, 503}),
        "pixel bomb": (lambda: post("/v1/matte", {"file": ("b.png", pixel_bomb)}), {413, 503}),
        "someone else's job": (lambda: httpx.get(f"{server}/v1/jobs/{'x' * 16}", params={"token": "y" * 32}),
                               {404}),
        "path in a name": (lambda: post("/v1/matte", {"file": ("../../etc/passwd", images[0])}), {200, 503}),
    }
    # About a hundred images to matte (0.4 s each here) and 140 hostile requests.
    plan = ["matte"] * 40 + ["background"] * 12 + ["batch"] * 12 + ["job"] * 8 + ["health"] * 15
    plan += [name for name in hostile for _ in range(14)]
    rng.shuffle(plan)

    def one(name):
        try:
            if name in good:
                r, busy = good[name]()
                return name, r.status_code, busy
            send, _ = hostile[name]  # retried a little too, so that most meet the check they are for
            r, busy = retried(send, attempts=10)
            return name, r.status_code, busy
        except httpx.HTTPError as e:  # a transport error is a failure like any other
            return name, type(e).__name__, 0

    with peak_growth(server.pid) as peak, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, plan))

    by_kind = Counter((name, code) for name, code, _ in results)
    wrong = {k: n for k, n in by_kind.items()
             if k[1] not in ({200, 503} if k[0] in good else hostile[k[0]][1])}
    assert not wrong, (wrong, by_kind)
    good_results = [(name, code) for name, code, _ in results if name in good]
    assert sum(code == 200 for _, code in good_results) >= 0.95 * len(good_results), by_kind
    retries = sum(busy for _, _, busy in results)
    print(f"{len(results)} requests, {retries} retries after 503: {sorted(by_kind.items())}; "
          f"server peak RSS {peak['peak'] / 2**20:.0f} MiB")

    h = httpx.get(server + "/health", timeout=30).json()
    assert h["status"] == "ok" and h["working_or_waiting"] == 0 and h["batches"] == 0
    assert peak["peak"] < 1.5 * 2 ** 30 and memory(server.pid, "VmRSS") < 1.5 * 2 ** 30, peak
    # The server ends answering, as at the start.
    assert httpx.post(server + "/v1/matte", files={"file": ("p.jpg", images[0])}, timeout=60).status_code == 200
    server.log.seek(0)
    log = server.log.read()
    assert "Traceback" not in log, log[-3000:]
