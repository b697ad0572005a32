"""`cvmatte serve` started on loopback as users start it: the API with good and bad uploads and
more concurrent requests than capacity, hostile requests (zip bombs, huge canvases, endless chunked
uploads, unguessable jobs), and the web page driven in headless Chromium (Debian's chromium +
chromium-driver through Selenium) for one image and for a batch."""

from __future__ import annotations

import base64
import io
import shutil
import socket
from contextlib import contextmanager
import subprocess
import sys
import struct
import tempfile
import time
import typing
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

httpx = pytest.importorskip("httpx")

from cvmatte.samples import write_demo_photos  # noqa: E402
from cvmatte.engine import zoo  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Url(str):
    """The server's base URL; .pid is its process (to read its memory from /proc), .log its output."""

    pid: int
    log: typing.IO[str]


def start_server(*args) -> tuple[subprocess.Popen, Url]:
    port = free_port()
    # Its output goes to a file: a pipe nobody reads would block the server once 64 KiB of logs fill it.
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-m", "cvmatte.cli", "serve", "--port", str(port), *args],
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    url = Url(f"http://127.0.0.1:{port}")
    url.pid, url.log = proc.pid, log
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError("server exited: " + log.read())
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_demo_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def server():
    proc, url = start_server("--device", "cpu", "--workers", "1", "--queue", "2", "--max-upload-mb", "2")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def decode(data: bytes) -> np.ndarray:
    im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert im is not None
    return im


def small_jpeg(path: Path, side: int = 128) -> bytes:
    """A photo scaled down to `side` pixels across: quick to matte on two CPU cores."""
    im = cv2.imread(str(path))
    im = cv2.resize(im, (side, max(16, round(im.shape[0] * side / im.shape[1]))), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", im)[1].tobytes()


def memory(pid: int, key: str) -> int:
    """A /proc/PID/status memory figure (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


@contextmanager
def peak_growth(pid: int):
    """{'growth': bytes}: how far the server's resident memory rose above its start within the block,
    at its peak (VmHWM, cleared first through clear_refs; where the kernel refuses that, VmRSS at
    the end)."""
    start, out = memory(pid, "VmRSS"), {}
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        key = "VmHWM"
    except OSError:
        key = "VmRSS"
    yield out
    out["growth"], out["peak"] = memory(pid, key) - start, memory(pid, key)


def zero_zip(members: int, size: int) -> bytes:
    """`members` zero-filled files of `size` bytes, deflated: about a thousandth of that on the wire."""
    buf = io.BytesIO()
    zeros = bytes(size)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(members):
            z.writestr(f"product_{i}.png", zeros)
    return buf.getvalue()


def lying_zip(declared: int, actual: int) -> bytes:
    """One member whose central directory says `declared` bytes while it inflates to `actual`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z, z.open("small.png", "w") as f:
        chunk = bytes(2 ** 20)
        for _ in range(actual // 2 ** 20):
            f.write(chunk)
    data = bytearray(buf.getvalue())
    struct.pack_into("<I", data, data.rfind(b"PK\x01\x02") + 24, declared)  # the uncompressed size field
    return bytes(data)


def endless_upload(sent: list[int], megabytes: int):
    """A multipart body, one file part of zeros in 1 MiB chunks; a generator, so httpx sends it
    chunked, with no Content-Length. sent[0] counts the bytes handed to the connection."""
    yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n' \
          b"Content-Type: image/png\r\n\r\n"
    chunk = bytes(2 ** 20)
    for _ in range(megabytes):
        sent[0] += len(chunk)
        yield chunk
    yield b"\r\n--xyz--\r\n"


CHUNKED = {"content-type": "multipart/form-data; boundary=xyz"}


def assert_coffee_cut_out(rgba: np.ndarray):
    assert rgba.ndim == 3 and rgba.shape[2] == 4
    a = rgba[..., 3]
    h, w = a.shape
    assert a[int(h * 0.3):int(h * 0.5), int(w * 0.35):int(w * 0.55)].mean() > 200  # the cup
    assert a[:int(h * 0.08), int(w * 0.8):].mean() < 60  # the table's far corner


def test_health_openapi_and_one_image(server, photos):
    h = httpx.get(server + "/health").json()
    assert h["status"] == "ok" and h["model"] == zoo.DEFAULT_MODEL and "guided" in h["refiners"]
    spec = httpx.get(server + "/openapi.json").json()
    assert {"/v1/matte", "/v1/batch", "/v1/jobs", "/health"} <= set(spec["paths"])
    coffee = photos[0].read_bytes()
    r = httpx.post(server + "/v1/matte", files={"file": ("coffee.jpg", coffee)}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert_coffee_cut_out(decode(r.content))
    r = httpx.post(server + "/v1/matte", files={"file": ("c.jpg", coffee)}, data={"output": "white", "canvas": "300x200"},
                   timeout=60)
    assert r.headers["content-type"] == "image/jpeg" and decode(r.content).shape == (200, 300, 3)


@pytest.mark.parametrize("name,data,status,words", [
    ("notes.png", b"just text pretending to be a PNG", 415, "not an image"),
    ("empty.jpg", b"", 415, "empty"),
])
def test_bad_uploads_are_refused_with_the_reason(server, name, data, status, words):
    r = httpx.post(server + "/v1/matte", files={"file": (name, data)}, timeout=30)
    assert r.status_code == status and words in r.json()["detail"]


def test_truncated_and_oversized_uploads(server, photos):
    coffee = photos[0].read_bytes()
    r = httpx.post(server + "/v1/matte", files={"file": ("cut.jpg", coffee[: len(coffee) // 2])}, timeout=30)
    assert r.status_code == 422 and "truncated" in r.json()["detail"]
    big = np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), np.uint8)
    ok, png = cv2.imencode(".png", big)
    assert len(png) > 2 * 2 ** 20
    r = httpx.post(server + "/v1/matte", files={"file": ("big.png", png.tobytes())}, timeout=30)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = httpx.post(server + "/v1/matte", files={"file": ("../../etc/passwd", coffee)}, timeout=60)
    assert r.status_code == 200 and "passwd" in r.headers["content-disposition"] and "/" not in \
        r.headers["content-disposition"].split("filename=")[1]


def test_more_concurrent_requests_than_capacity_get_503_not_a_crash(server, photos):
    data = photos[1].read_bytes()  # the motorcycle, ~0.3 s a request here

    def one(_):
        return httpx.post(server + "/v1/matte", files={"file": ("m.jpg", data)}, timeout=120).status_code

    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(one, range(10)))
    assert set(codes) <= {200, 503} and codes.count(200) >= 3 and codes.count(503) >= 1, codes
    assert httpx.get(server + "/health").json()["working_or_waiting"] == 0
    assert httpx.post(server + "/v1/matte", files={"file": ("m.jpg", data)}, timeout=60).status_code == 200


def test_batch_of_images_and_a_zip_returns_a_zip_with_errors_listed(server, photos):
    files = [("file", (p.name, p.read_bytes())) for p in photos[:3]] + [("file", ("bad.png", b"nope"))]
    r = httpx.post(server + "/v1/batch", files=files, timeout=120)
    assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(zf.namelist())
    assert {"coffee_matte.png", "motorcycle_matte.png", "rocket_matte.png", "errors.txt"} <= names
    assert "bad.png" in zf.read("errors.txt").decode()
    assert_coffee_cut_out(decode(zf.read("coffee_matte.png")))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("folder/coffee.jpg", photos[0].read_bytes())
    r = httpx.post(server + "/v1/batch", files={"file": ("in.zip", buf.getvalue())}, timeout=120)
    assert zipfile.ZipFile(io.BytesIO(r.content)).namelist() == ["coffee_matte.png"]


# --- hostile requests: admission, zip bombs, canvases, streaming limits, jobs ---------------------

def wait_for_job(server, job: dict, rounds: int = 1200) -> dict:
    for _ in range(rounds):  # bounded: 0.1 s apart
        r = httpx.get(f"{server}/v1/jobs/{job['id']}", params={"token": job["token"]}, timeout=30)
        assert r.status_code == 200, r.text
        if r.json()["state"] in ("done", "failed"):
            return r.json()
        time.sleep(0.1)
    raise AssertionError(f"job {job['id']} did not finish")


def test_batches_and_jobs_past_capacity_get_503_at_once(server, photos):
    files = [("file", (p.name, p.read_bytes())) for p in photos[:3]]

    def one(_):
        r = httpx.post(server + "/v1/batch", files=files, timeout=300)
        return r.status_code, r.headers.get("retry-after")

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one, range(10)))
    codes = [c for c, _ in results]
    assert set(codes) <= {200, 503} and codes.count(200) >= 1 and codes.count(503) >= 1, codes
    assert all(retry == "1" for c, retry in results if c == 503)
    # Jobs answer at once and hold their batch place until they finish: a few, then 503.
    accepted, refused = [], 0
    for _ in range(20):
        r = httpx.post(server + "/v1/jobs", files=files, timeout=60)
        assert r.status_code in (200, 503), r.text
        if r.status_code == 503:
            refused += 1
            break
        accepted.append(r.json())
    assert refused == 1 and 1 <= len(accepted) <= httpx.get(server + "/health").json()["batch_slots"]
    for job in accepted:
        assert wait_for_job(server, job)["state"] == "done"
    h = httpx.get(server + "/health").json()
    assert h["batches"] == 0 and h["working_or_waiting"] == 0


def test_health_answers_while_batches_run(server, photos):
    files = [("file", (p.name, p.read_bytes())) for p in photos[:3]]

    def one(_):  # more batches than the server's shared thread pool has threads (40)
        return httpx.post(server + "/v1/batch", files=files, timeout=300).status_code

    with ThreadPoolExecutor(48) as pool:
        batches = [pool.submit(one, i) for i in range(48)]
        for _ in range(600):  # until a batch is at work (bounded)
            h = httpx.get(server + "/health", timeout=30).json()
            if h["batches"]:
                break
            time.sleep(0.05)
        answers = [httpx.get(server + "/health", timeout=30) for _ in range(10)]
        still_running = httpx.get(server + "/health", timeout=30).json()["batches"]
        codes = [f.result() for f in batches]
    assert h["batches"] >= 1 and all(a.status_code == 200 and a.json()["status"] == "ok" for a in answers)
    assert still_running >= 1  # the answers came while batches were at work
    assert set(codes) <= {200, 503} and codes.count(200) >= 1 and codes.count(503) >= 1, codes


def test_zip_bombs_are_refused_before_they_expand(server):
    member = 1_900_000  # each member just under the 2 MiB upload limit, as it must be
    few = zero_zip(19, member)  # 36 MB declared: under the allowance one zip had before (20 uploads)
    many = zero_zip(100, member)  # 190 MB declared
    liar = lying_zip(1000, 300 * 2 ** 20)  # says 1000 bytes, inflates to 300 MiB
    assert max(len(few), len(many), len(liar)) < 2 ** 20
    with peak_growth(server.pid) as peak:
        # Five zips in one request: their sizes count together.
        r = httpx.post(server + "/v1/batch", files=[("file", (f"z{i}.zip", few)) for i in range(5)], timeout=120)
        assert r.status_code == 413 and "expand" in r.json()["detail"], r.status_code
        r = httpx.post(server + "/v1/jobs", files={"file": ("many.zip", many)}, timeout=120)
        assert r.status_code == 413 and "expand" in r.json()["detail"], r.status_code
        # A member is never read past the size its header declares.
        r = httpx.post(server + "/v1/batch", files={"file": ("liar.zip", liar)}, timeout=120)
        assert r.status_code in (413, 422) and "zip" in r.json()["detail"], r.text
    assert peak["growth"] < 100 * 2 ** 20, peak
    assert httpx.get(server + "/health").json()["batches"] == 0


def test_a_canvas_past_the_pixel_cap_is_refused(server, photos):
    tiny = small_jpeg(photos[0], 64)
    for path in ("/v1/matte", "/v1/batch"):
        r = httpx.post(server + path, files={"file": ("c.jpg", tiny)},
                       data={"output": "background", "canvas": "8000x8000"}, timeout=60)
        assert r.status_code == 400 and "16 megapixels" in r.json()["detail"], r.status_code


def test_a_chunked_upload_past_the_limit_is_refused_while_it_streams(server):
    # /v1/matte: one 2 MiB upload and its form; /v1/batch: 50 uploads.
    for path, megabytes in (("/v1/matte", 64), ("/v1/batch", 400)):
        sent = [0]
        r = httpx.post(server + path, content=endless_upload(sent, megabytes), headers=CHUNKED, timeout=120)
        assert r.status_code == 413 and "limit" in r.json()["detail"], r.text
        assert sent[0] < megabytes * 2 ** 20 / 2, (path, sent)  # refused mid-stream, never spooled whole
    assert httpx.get(server + "/health").json()["working_or_waiting"] == 0


def test_jobs_are_kept_until_fetched_and_need_their_token(server, photos):
    tiny = small_jpeg(photos[0])

    def post_job():
        for _ in range(1200):  # bounded: while every batch place is taken, 503, retried 0.1 s apart
            r = httpx.post(server + "/v1/jobs", files={"file": ("c.jpg", tiny)}, timeout=60)
            if r.status_code != 503:
                assert r.status_code == 200, r.text
                return r.json()
            time.sleep(0.1)
        raise AssertionError("never admitted")

    jobs = [post_job() for _ in range(25)]  # more than the 20 the history used to keep
    assert len({j["id"] for j in jobs}) == 25
    assert all(len(j["id"]) >= 16 and len(j["token"]) >= 32 for j in jobs)
    for job in jobs:  # every one still there, none evicted by the newer ones
        state = wait_for_job(server, job)
        assert state["state"] == "done", state
        z = httpx.get(server + state["zip"], timeout=60)
        assert z.status_code == 200 and zipfile.ZipFile(io.BytesIO(z.content)).namelist() == ["c_matte.png"]
    job, other = jobs[0], jobs[1]
    url = f"{server}/v1/jobs/{job['id']}"
    assert httpx.get(url).status_code == 404
    assert httpx.get(url, params={"token": other["token"]}).status_code == 404
    assert httpx.get(url + "/zip").status_code == 404
    assert httpx.get(url + "/zip", params={"token": other["token"]}).status_code == 404
    assert httpx.get(url, headers={"X-Job-Token": job["token"]}).json()["state"] == "done"
    assert httpx.get(url + "/zip", headers={"X-Job-Token": job["token"]}).status_code == 200
    assert httpx.get(server + "/v1/jobs").status_code != 200  # no list of everyone's jobs


def test_the_job_store_never_drops_a_running_or_unfetched_job():
    from cvmatte.server import Busy, Job, JobStore

    now = [1000.0]
    store = JobStore(ttl=3600, max_jobs=3, clock=lambda: now[0])
    a, b, c = (Job(1, ["x.jpg"]) for _ in range(3))
    for j in (a, b, c):
        store.add(j)
    with pytest.raises(Busy):  # full of running jobs: refuse the new one, drop none
        store.add(Job(1, ["x.jpg"]))
    b.state, b.finished = "done", now[0]  # finished, not fetched: kept
    with pytest.raises(Busy):
        store.add(Job(1, ["x.jpg"]))
    a.state, a.finished, a.fetched = "done", now[0], True  # fetched: may make room
    d = Job(1, ["x.jpg"])
    store.add(d)
    assert store.get(a.id, a.token) is None and store.get(b.id, b.token) is b and store.get(d.id, d.token) is d
    assert store.get(b.id, None) is None and store.get(b.id, c.token) is None and store.get("nope", b.token) is None
    now[0] += 3601  # an hour after b finished: expired; c is still running, whatever its age
    assert store.get(b.id, b.token) is None and store.get(c.id, c.token) is c


# --- the web page in headless Chromium ----------------------------------------------------------

def chromium_driver():
    webdriver = pytest.importorskip("selenium.webdriver")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not browser or not Path(driver_path).exists():
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/test.sh installs them)")
    from selenium.webdriver.chrome.service import Service as ChromeService

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--lang=en-US"):
        options.add_argument(arg)
    return webdriver.Chrome(service=ChromeService(driver_path), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = chromium_driver()
    yield driver
    driver.quit()


def wait_for(driver, script, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {script}; status: {driver.find_element('id', 'status').text}")


def test_page_one_image_shows_original_alpha_and_cut_out(server, browser, photos):
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    browser.find_element(By.ID, "lang-en").click()
    assert browser.find_element(By.ID, "tab-batch").text == "Batch"
    browser.find_element(By.ID, "lang-zh").click()
    assert browser.find_element(By.ID, "tab-batch").text == "批量处理"
    browser.find_element(By.ID, "single-input").send_keys(str(photos[0]))
    href = wait_for(browser, "const a = document.getElementById('download-single'); return !a.hidden && a.href;")
    assert href.startswith("blob:")
    png = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => {"
        "  let s = ''; new Uint8Array(b).forEach(c => s += String.fromCharCode(c)); done(btoa(s)); });", href)
    assert_coffee_cut_out(decode(base64.b64decode(png)))
    # The alpha panel shows the cut-out's alpha, the original panel the photo.
    wait_for(browser, "return document.getElementById('result-alpha').width > 1;")
    assert browser.execute_script("return document.getElementById('result-original').naturalWidth") == \
        cv2.imread(str(photos[0])).shape[1]


def test_page_batch_shows_progress_and_gives_a_zip(server, browser, photos, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    browser.find_element(By.ID, "tab-batch").click()
    browser.find_element(By.ID, "batch-input").send_keys("\n".join(str(p) for p in photos))
    href = wait_for(browser, "const a = document.getElementById('download-zip'); return !a.hidden && a.href;")
    assert browser.execute_script("const p = document.getElementById('batch-progress'); return [p.value, p.max];") == [5, 5]
    zf = zipfile.ZipFile(io.BytesIO(httpx.get(href, timeout=60).content))
    assert sorted(zf.namelist()) == sorted(f"{p.stem}_matte.png" for p in photos)
    assert_coffee_cut_out(decode(zf.read("coffee_matte.png")))
    rows = wait_for(browser, "return document.querySelectorAll('#history tr').length;")
    assert rows >= 1


def test_stalled_uploads_do_not_deny_the_service_to_everyone(photos):
    """Twenty clients send their headers and a few bytes, then stall: a normal /v1/matte still gets
    its cut-out at once (the gate counts requests whose body is in), and each staller gets 408."""
    import socket

    proc, url = start_server("--device", "cpu", "--workers", "1", "--queue", "2", "--upload-timeout", "4")
    stallers = []
    try:
        host, port = url.removeprefix("http://").split(":")
        for _ in range(20):
            s = socket.create_connection((host, int(port)), timeout=30)
            s.sendall(b"POST /v1/matte HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
                      b"Content-Length: 100000\r\n\r\n--xyz\r\n")
            stallers.append(s)
        time.sleep(0.5)
        t0 = time.time()
        r = httpx.post(url + "/v1/matte", files={"file": ("c.jpg", small_jpeg(photos[0]))}, timeout=60)
        assert r.status_code == 200, r.text
        assert time.time() - t0 < 4  # not after the stallers' deadline
        for s in stallers:
            reply = s.recv(4096)
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert httpx.get(url + "/health").json()["status"] == "ok"
    finally:
        for s in stallers:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)
