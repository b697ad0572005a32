"""Take the README's screenshot of the web page: start `cvmatte serve` on loopback, cut out the
demo coffee photo in headless Chromium, save docs/webui.png.

    .venv/bin/python scripts/screenshot_webui.py [--lang zh|en]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_service import chromium_driver, start_server, wait_for  # noqa: E402

from cvmatte.samples import write_demo_photos  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lang", default="zh", choices=["zh", "en"])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "webui.png")
    args = ap.parse_args()
    proc, url = start_server("--device", "cpu")
    driver = chromium_driver()
    try:
        photos = write_demo_photos(tempfile.mkdtemp())
        driver.get(url + "/")
        driver.find_element("id", f"lang-{args.lang}").click()
        driver.find_element("id", "single-input").send_keys(str(photos[0]))
        wait_for(driver, "const a = document.getElementById('download-single'); return !a.hidden && a.href;")
        time.sleep(0.5)
        driver.save_screenshot(str(args.out))
        print(f"wrote {args.out}")
    finally:
        driver.quit()
        proc.terminate()


if __name__ == "__main__":
    main()
