"""`cvmatte serve` started on loopback as users start it: the API with good and bad uploads and
more concurrent requests than capacity, and the web page driven in headless Chromium (Debian's
chromium + chromium-driver through Selenium) for one image and for a batch."""

from __future__ import annotations

import base64
import io
import shutil
import socket
import subprocess
import sys
import time
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


def start_server(*args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cvmatte.cli", "serve", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited: " + proc.stdout.read())
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
