"""What an operator meets: concurrent runs into one folder, resume under another spelling, the
output folder inside the input, devices and FIFOs among the inputs, mistakes on the command line,
Ctrl-C. The model is the tiny graph of test_catalog (dark pixels are foreground), so each run takes
seconds; the processes are real `cvmatte` processes where the case is about processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cvmatte import ImageError, Matter
from cvmatte.engine.catalog.store import Manifest

from .test_catalog import build_tiny_model, product_shot


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def shots(folder: Path, n: int, suffix: str, seed: int, size=(120, 160)) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"item{i}{suffix}"
        Image.fromarray(product_shot(rng, *size)).save(p, quality=90)
        out.append(p)
    return out


def cli(*args, cwd=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "cvmatte.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, **kw)


def rows_of(manifest: Path) -> list[dict]:
    return Manifest(manifest).rows()


def test_two_processes_with_colliding_names_keep_every_cut_out(tmp_path, tiny):
    """A/shoes/itemN.jpg and B/shoes/itemN.png: the same SKU and stem in two runs at once."""
    a = shots(tmp_path / "A" / "shoes", 6, ".jpg", seed=1)
    b = shots(tmp_path / "B" / "shoes", 6, ".png", seed=2, size=(140, 100))
    out = tmp_path / "out"
    procs = [cli("catalog", "run", tmp_path / side, "-o", out, "--model", tiny, "-q") for side in ("A", "B")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    rows = rows_of(out / "manifest.jsonl")
    assert len(rows) == 12
    files = [r["outputs"]["rgba"] for r in rows]
    assert len(set(files)) == 12, "two rows point at one file"
    for r in rows:  # each file is its own input's cut-out
        h, w = cv2.imread(r["input"]).shape[:2]
        assert cv2.imread(r["outputs"]["rgba"], cv2.IMREAD_UNCHANGED).shape == (h, w, 4)
    assert len(list(out.rglob("*_matte.png"))) == 12
    # `cvmatte matte` runs started in the same second share a dated folder: the same holds.
    for side, inputs in (("A", a), ("B", b)):
        Matter(tiny, device="cpu").matte_files(inputs, tmp_path / "dated", when=DATE)
    assert len(list((tmp_path / "dated").rglob("*_matte.png"))) == 12


DATE = __import__("datetime").datetime(2026, 1, 2, 3, 4, 5)


def test_resume_under_another_spelling_redoes_nothing_and_retries_failures(tmp_path, tiny, monkeypatch):
    good = shots(tmp_path / "cat" / "SKU", 5, ".jpg", seed=3)
    broken = tmp_path / "cat" / "SKU" / "late.jpg"
    broken.write_bytes(good[0].read_bytes()[:200])  # still being uploaded: truncated
    out = tmp_path / "out"
    m = Matter(tiny, device="cpu")
    m.catalog([tmp_path / "cat"], out)  # absolute spelling
    rows = rows_of(out / "manifest.jsonl")
    assert len(rows) == 6 and sum(r["status"] in ("ok", "review") for r in rows) == 5
    monkeypatch.chdir(tmp_path)
    m.catalog(["cat/./SKU/../SKU"], out, resume=True, retry_failed=False)  # relative, another spelling
    assert len(rows_of(out / "manifest.jsonl")) == 6  # nothing redone
    broken.write_bytes(good[1].read_bytes())  # the upload finished
    third = m.catalog(["cat"], out, resume=True)  # --retry-failed is the default
    rows = rows_of(out / "manifest.jsonl")
    assert len(rows) == 7 and rows[-1]["input"].endswith("late.jpg") and rows[-1]["status"] in ("ok", "review")
    assert len(third.rows) == 6 and all(r.ok for r in third.rows)  # the run's rows: one per input, the latest


def test_output_folder_inside_the_input_is_never_an_input(tmp_path, tiny):
    shots(tmp_path / "cat" / "SKU", 3, ".jpg", seed=4)
    m = Matter(tiny, device="cpu")
    for _ in range(3):
        report = m.catalog([tmp_path / "cat"], tmp_path / "cat" / "out")
        assert len(report.rows) == 3
    report = m.matte_files([tmp_path / "cat"], tmp_path / "cat" / "cutouts")
    assert len(report.rows) == 3


def test_devices_fifos_and_unread_files_are_named_not_read(tmp_path, tiny):
    folder = tmp_path / "cat" / "SKU"
    shots(folder, 2, ".jpg", seed=5)
    os.mkfifo(folder / "pipe.jpg")
    Image.new("RGB", (64, 64), "red").save(folder / "anim.gif")
    m = Matter(tiny, device="cpu")
    report = m.catalog([tmp_path / "cat", "/dev/zero"], tmp_path / "out")  # would never end if read
    by_name = {Path(r.input).name: r for r in report.rows}
    assert by_name["zero"].status == "rejected" and "not a regular file" in by_name["zero"].error
    assert {Path(p).name for p in report.summary["skipped"]} == {"pipe.jpg", "anim.gif"}
    with pytest.raises(ImageError, match="no pixels"):
        m.matte(np.zeros((0, 10, 3), np.uint8))


def test_a_multi_page_tiff_is_sent_to_review_with_the_reason(tmp_path, tiny):
    rng = np.random.default_rng(6)
    pages = [Image.fromarray(product_shot(rng, 100, 100)) for _ in range(3)]
    (tmp_path / "in").mkdir()
    pages[0].save(tmp_path / "in" / "sheet.tif", save_all=True, append_images=pages[1:])
    (row,) = Matter(tiny, device="cpu").catalog([tmp_path / "in"], tmp_path / "out").rows
    assert row.status == "review" and any("3 pages" in f for f in row.flags)


def test_operator_mistakes_are_one_line_and_exit_2(tmp_path, tiny):
    shots(tmp_path / "in", 1, ".jpg", seed=7)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        (["matte", tmp_path / "in", "-o", a_file], "is a file"),
        (["catalog", "run", tmp_path / "in", "-o", a_file], "is a file"),
        (["matte", tmp_path / "in", "-o", tmp_path / "o", "--sku-regex", "("], "not a regular expression"),
        (["matte", tmp_path / "in", "-o", tmp_path / "o", "--sku-csv", tmp_path / "nope.csv"], "no such file"),
        (["catalog", "run", tmp_path / "in", "-o", tmp_path / "o", "--device", "gpu"], "--device gpu"),
        (["samples", a_file], "is a file"),
        (["catalog", "run", tmp_path / "missing", "-o", tmp_path / "o"], "no such file"),
    ]
    for args, words in cases:
        p = cli(*args)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2, (args, err)
        assert words in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "o").exists()  # refused before anything was written
    p = cli("--version")
    assert p.communicate(timeout=60)[0].startswith("cvmatte ") and p.returncode == 0
    p = cli("matte", "-h")
    assert "--background" in p.communicate(timeout=60)[0] and p.returncode == 0


def test_log_lines_are_not_wrapped_in_a_pipe(tmp_path, tiny):
    folder = tmp_path / ("a_rather_long_folder_name_" * 4) / "SKU"
    shots(folder, 1, ".jpg", seed=8)
    (folder / "broken_file_with_a_long_name.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    p = cli("matte", folder, "-o", tmp_path / "o", "--model", tiny, "-q")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1
    (line,) = [ln for ln in err.splitlines() if "broken_file_with_a_long_name" in ln]
    assert str(folder) in line  # the whole path on one line


def test_ctrl_c_ends_cleanly_and_keeps_what_was_written(tmp_path, tiny):
    shots(tmp_path / "in" / "SKU", 150, ".jpg", seed=9, size=(600, 800))
    out = tmp_path / "out"
    # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT: a
    # suite run in the background would send Ctrl-C to a process that cannot hear it.
    p = cli("catalog", "run", tmp_path / "in", "-o", out, "--model", tiny, "-q",
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    manifest = out / "manifest.jsonl"
    for _ in range(1200):  # up to 2 minutes for the first rows
        if manifest.is_file() and manifest.read_bytes().count(b"\n") >= 5 or p.poll() is not None:
            break
        time.sleep(0.1)
    assert p.poll() is None, "finished before it could be interrupted"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "terminate called" not in err and "Traceback" not in err
    assert not list(out.rglob("*.part"))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]  # every line whole
    assert 5 <= len(rows) < 150
    for r in rows:
        assert cv2.imread(r["outputs"]["rgba"], cv2.IMREAD_UNCHANGED) is not None


def test_one_file_to_an_exact_path_or_through_stdin_and_stdout(tmp_path, tiny):
    (src,) = shots(tmp_path / "in", 1, ".jpg", seed=10)
    p = cli("matte", src, "-o", tmp_path / "exact.png", "--model", tiny)
    assert p.communicate(timeout=120) and p.returncode == 0
    assert sorted(x.name for x in tmp_path.iterdir()) == ["exact.png", "in"]  # no folder, no manifest
    rgba = cv2.imread(str(tmp_path / "exact.png"), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (120, 160, 4)
    p = subprocess.run([sys.executable, "-m", "cvmatte.cli", "matte", "-", "-o", "-", "--model", str(tiny)],
                       input=src.read_bytes(), capture_output=True, timeout=120)
    assert p.returncode == 0 and p.stdout == (tmp_path / "exact.png").read_bytes()  # the same path, the same bytes
    p = subprocess.run([sys.executable, "-m", "cvmatte.cli", "matte", "-", "-o", "-", "--only-alpha", "--model",
                        str(tiny)], input=src.read_bytes(), capture_output=True, timeout=120)
    alpha = cv2.imdecode(np.frombuffer(p.stdout, np.uint8), cv2.IMREAD_UNCHANGED)
    assert p.returncode == 0 and alpha.shape == (120, 160) and np.array_equal(alpha, rgba[..., 3])
    p = cli("matte", src, src, "-o", tmp_path / "two.png", "--model", tiny)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "exactly one input" in err


def test_max_memory_admits_fewer_large_images_at_once(tmp_path, tiny):
    from cvmatte.engine.catalog import Entry, MemorySink, Runner
    from cvmatte.engine.outputs import OutputSpec

    paths = shots(tmp_path / "in", 6, ".jpg", seed=11, size=(400, 500))
    entries = [Entry(str(p), sku="s", stem=p.stem, width=500, height=400) for p in paths]
    with Matter(tiny, device="cpu") as m:
        free = Runner(m.engine, OutputSpec(), MemorySink())
        rows_free = list(free.run(entries))
        # 0.2 MP at 60 B/px is 12 MB an image: a 20 MB budget admits one at a time.
        tight = Runner(m.engine, OutputSpec(), MemorySink(), settings=m.run_settings(max_memory_mb=20))
        rows_tight = list(tight.run(entries))
    assert free.max_in_flight > 1 and tight.max_in_flight == 1
    assert [r.input for r in rows_tight] == [r.input for r in rows_free] and all(r.ok for r in rows_tight)
