"""What a filesystem and an operator can do to a run (issue 24): symlink loops, damaged cache
entries, a full disk under the manifest, SIGTERM; real processes and real files, the tiny model
of test_catalog so each run takes seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvmatte import Matter
from cvmatte.engine.catalog.store import Manifest

from .test_catalog import build_tiny_model, signal_after_rows


def _photos(folder: Path, n: int, size=(96, 128)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = np.full((*size, 3), 230, np.uint8)
        y, x = rng.integers(10, 40, 2)
        img[y:y + 40, x:x + 60] = rng.integers(0, 60, 3)
        out.append(folder / f"p{i:03d}.jpg")
        Image.fromarray(img).save(out[-1], quality=95)
    return out


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "cvmatte.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def test_a_symlink_loop_fails_its_own_rows_and_the_photos_beside_it_are_cut_out(tmp_path, tiny):
    folder = tmp_path / "in"
    _photos(folder, 2)
    os.symlink("b.jpg", folder / "a.jpg")
    os.symlink("a.jpg", folder / "b.jpg")
    for out in (tmp_path / "out", folder / "out"):  # an output inside the input bars it: resolve on every file
        proc = _run("matte", folder, "-o", out, "--model", tiny, "-q")
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
        assert proc.returncode == 1, proc.stdout + proc.stderr
        rows = [r for m in out.rglob("*manifest.jsonl") for r in Manifest(m).rows()]
        by_name = {Path(r["input"]).name: r for r in rows}
        assert {by_name["p000.jpg"]["status"], by_name["p001.jpg"]["status"]} <= {"ok", "review"}
        for loop in ("a.jpg", "b.jpg"):
            assert by_name[loop]["status"] in ("failed", "rejected") and "symbolic links" in by_name[loop]["error"]
    proc = _run("matte", folder / "a.jpg", folder / "p000.jpg", "-o", tmp_path / "named", "--model", tiny, "-q")
    assert "Traceback" not in proc.stderr and proc.returncode == 1, proc.stdout + proc.stderr


@pytest.mark.parametrize("damage", [b"\0" * 64, b"\xff\xfe not json", b"[1, 2]", b'{"input": "x"}'])
def test_a_damaged_cache_record_is_a_miss_recomputed_and_rewritten(tmp_path, tiny, damage):
    _photos(tmp_path / "in", 3)
    m = Matter(tiny, "onnxruntime", "cpu")
    first = m.catalog([tmp_path / "in"], tmp_path / "out")
    assert first.summary["model_runs"] == 3
    records = sorted((tmp_path / "out" / ".cache").rglob("*.json"))
    assert len(records) == 3
    records[0].write_bytes(damage)
    again = m.catalog([tmp_path / "in"], tmp_path / "out")
    assert len(again.succeeded) == 3 and not again.failed
    assert again.summary["cache_hits"] == 2 and again.summary["model_runs"] == 1
    assert isinstance(json.loads(records[0].read_text())["quality"], dict)  # rewritten whole


def test_a_run_leaves_no_lock_file_and_counts_its_model_runs(tmp_path, tiny):
    _photos(tmp_path / "in", 5)
    report = Matter(tiny, "onnxruntime", "cpu").matte_files([tmp_path / "in"], tmp_path / "out")
    assert report.summary["model_runs"] == 5
    assert not list((tmp_path / "out").rglob("*.lock"))
    summary = json.loads(next((tmp_path / "out").rglob("*_summary.json")).read_text())
    assert summary["model_runs"] == 5


def test_sigterm_ends_a_run_as_ctrl_c_does(tmp_path, tiny):
    _photos(tmp_path / "in", 400, size=(480, 640))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "cvmatte.cli", "catalog", "run", tmp_path / "in", "-o", out,
                             "--model", tiny, "-q"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    manifest = out / "manifest.jsonl"
    signal_after_rows(proc, manifest, 20, signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, log
    assert "interrupted" in log and "Traceback" not in log
    rows = Manifest(manifest).rows()
    assert 20 <= len(rows) < 400
    assert not [p for p in out.rglob("*") if p.is_file() and (".part" in p.name or p.name.startswith(".claim-"))]


def test_two_resumes_of_one_run_at_once_share_its_inputs(tmp_path, tiny):
    """A run killed part-way, then `--resume` started twice at once (two operators, or a retry
    loop): every input gets one row in the run, none two, and both exit cleanly."""
    _photos(tmp_path / "in", 300, size=(480, 640))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cvmatte.cli", "catalog", "run", tmp_path / "in", "-o", out, "--model", tiny, "-q"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    manifest = out / "manifest.jsonl"
    signal_after_rows(first, manifest, 20, signal.SIGKILL)
    first.wait(timeout=60)
    resumes = [subprocess.Popen(cmd + ["--resume"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in resumes]
    assert [p.returncode for p in resumes] == [0, 0], logs
    rows = Manifest(manifest).rows()
    assert len({r["run"] for r in rows}) == 1
    per_input: dict[str, int] = {}
    for r in rows:
        per_input[r["input"]] = per_input.get(r["input"], 0) + 1
    assert len(per_input) == 300
    doubled = [i for i, n in per_input.items() if n > 1]
    assert not doubled, f"{len(doubled)} inputs have two rows, e.g. {doubled[:3]}"
    assert all(r["status"] in ("ok", "review") for r in rows)
    assert not (out / ".cvmatte" / "work").exists()  # no claim left once the run is done


def _tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a full disk is a small tmpfs, which only root can mount")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def test_a_full_disk_leaves_no_torn_manifest_row(tmp_path):
    disk = tmp_path / "disk"
    _tmpfs(disk, "64k")
    try:
        manifest = Manifest(disk / "manifest.jsonl")
        row = {"input": "x" * 300, "status": "ok"}
        manifest.append(row)  # the manifest's first page exists, with room for a few more rows
        with open(disk / "filler", "wb", buffering=0) as f:  # then the disk is filled to its last byte
            for chunk in (4096, 1):
                try:
                    while f.write(b"\0" * chunk):
                        pass
                except OSError:
                    pass
        written = 1
        with pytest.raises(OSError):
            for _ in range(200):  # the manifest's first page takes some rows, then the disk is full
                manifest.append(row)
                written += 1
        data = (disk / "manifest.jsonl").read_bytes() if (disk / "manifest.jsonl").exists() else b""
        assert data.count(b"\n") == written and (not data or data.endswith(b"\n"))
        assert all(json.loads(line) == row for line in data.splitlines())
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


@pytest.mark.parametrize("damage", [b"", b"\0" * 32, b"[1]", b'{"name": "u2netp-product"}'])
def test_a_damaged_spec_of_a_packaged_model_in_the_cache_is_restored_from_the_package(tmp_path, damage):
    from cvmatte.engine import zoo

    first = zoo.resolve("u2netp-product", tmp_path)
    spec_file = first.path.with_suffix(".json")
    good = spec_file.read_bytes()
    spec_file.write_bytes(damage)
    again = zoo.resolve("u2netp-product", tmp_path)
    assert again.spec == first.spec and spec_file.read_bytes() == good
    proc = _run("matte", _photos(tmp_path / "in", 1)[0], "-o", tmp_path / "one.png", "--model", "u2netp-product")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_damaged_spec_beside_a_file_says_what_to_do(tmp_path, tiny):
    import shutil

    model = tmp_path / "m" / "tiny.onnx"
    model.parent.mkdir()
    shutil.copy(tiny, model)
    model.with_suffix(".json").write_bytes(b"\0\0\0")
    proc = _run("matte", _photos(tmp_path / "in", 1)[0], "-o", tmp_path / "one.png", "--model", model)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "invalid spec" in said and "write it again" in said, said


def test_watch_takes_again_a_slow_copy_that_failed_while_it_stalled(tmp_path, tiny):
    import threading

    src = _photos(tmp_path / "src", 1, size=(480, 640))[0].read_bytes()
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    m = Matter(tiny, "onnxruntime", "cpu")
    rows = []
    t = threading.Thread(target=lambda: rows.extend(m.watch(inbox, out, settle_s=0.2, idle_exit_s=3.0)))
    t.start()
    with open(inbox / "slow.jpg", "wb") as f:  # a network share: half, a stall past the settle time, the rest
        f.write(src[: len(src) // 2])
        f.flush()
        time.sleep(1.5)
        f.write(src[len(src) // 2:])
    t.join(timeout=60)
    assert not t.is_alive()
    history = [r for r in Manifest(out / "manifest.jsonl").rows() if r["input"].endswith("slow.jpg")]
    assert history[0]["status"] == "failed" and "truncated" in history[0]["error"]  # the stall was seen
    assert history[-1]["status"] in ("ok", "review") and [r.ok for r in rows] == [True]


def test_watch_takes_again_a_photo_copied_over_one_it_cut_out(tmp_path, tiny):
    """A re-shoot dropped into the watched folder under the same name is cut out again; an event
    that does not change the file (a touch of its access time) is not a new version."""
    import threading

    first, second = _photos(tmp_path / "src", 2, size=(480, 640))
    second_bytes = _photos(tmp_path / "src2", 3, size=(480, 640))[2].read_bytes()  # another photo
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    (inbox / "shot.jpg").write_bytes(first.read_bytes())
    m = Matter(tiny, "onnxruntime", "cpu")
    rows = []
    t = threading.Thread(target=lambda: rows.extend(m.watch(inbox, out, settle_s=0.2, idle_exit_s=3.0)))
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "manifest.jsonl").is_file():
        time.sleep(0.1)
    time.sleep(0.5)
    os.utime(inbox / "shot.jpg", (time.time() - 100, (inbox / "shot.jpg").stat().st_mtime))  # atime only
    time.sleep(0.8)
    (inbox / "shot.jpg").write_bytes(second_bytes)
    t.join(timeout=60)
    assert not t.is_alive()
    history = [r for r in Manifest(out / "manifest.jsonl").rows() if r["input"].endswith("shot.jpg")]
    assert [r["status"] in ("ok", "review") for r in history] == [True, True], history
    assert history[0]["sha256"] != history[1]["sha256"]
    import hashlib

    assert history[1]["sha256"] == hashlib.sha256(second_bytes).hexdigest()


def _rows(out: Path) -> list[dict]:
    return [r for m in out.rglob("*manifest.jsonl") for r in Manifest(m).rows()]


def test_resume_skips_manifest_lines_that_are_no_rows(tmp_path, tiny):
    _photos(tmp_path / "in", 3)
    out = tmp_path / "out"
    assert _run("catalog", "run", tmp_path / "in", "-o", out, "--model", tiny, "-q").returncode == 0
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{}\nnull\n[1]\n"x"\n{"run": 1, "input": 2}\n')
    proc = _run("catalog", "run", tmp_path / "in", "-o", out, "--model", tiny, "-q", "--resume")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert len(Manifest(out / "manifest.jsonl").rows()) == 3


def test_resume_redoes_a_deleted_cut_out_and_a_replaced_photo(tmp_path, tiny):
    photos = _photos(tmp_path / "in", 3)
    out = tmp_path / "out"
    assert _run("catalog", "run", tmp_path / "in", "-o", out, "--model", tiny, "-q").returncode == 0
    first = {Path(r["input"]).name: r for r in Manifest(out / "manifest.jsonl").rows()}
    Path(first["p000.jpg"]["outputs"]["rgba"]).unlink()
    Image.fromarray(np.full((64, 64, 3), 20, np.uint8)).save(photos[1])  # another photo, same name
    assert _run("catalog", "run", tmp_path / "in", "-o", out, "--model", tiny, "-q", "--resume").returncode == 0
    rows = Manifest(out / "manifest.jsonl").rows()
    redone = [Path(r["input"]).name for r in rows[3:]]
    assert sorted(redone) == ["p000.jpg", "p001.jpg"]
    assert Path(rows[-1]["outputs"]["rgba"]).is_file() and all(r["run"] == rows[0]["run"] for r in rows)


def test_names_near_the_file_system_limit_and_an_input_inside_the_output(tmp_path, tiny):
    photo = _photos(tmp_path / "src", 1)[0]
    long_dir = tmp_path / "long"
    long_dir.mkdir()
    (long_dir / ("b" * 235 + ".jpg")).write_bytes(photo.read_bytes())
    csv = tmp_path / "skus.csv"
    csv.write_text(f"{'b' * 235}.jpg,{'S' * 300}\n")
    proc = _run("catalog", "run", long_dir, "-o", tmp_path / "out", "--model", tiny, "--sku-csv", csv, "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = _rows(tmp_path / "out")
    assert row["status"] in ("ok", "review") and all(len(Path(p).name) < 200 for p in row["outputs"].values())
    same = tmp_path / "same"
    same.mkdir()
    (same / "p.jpg").write_bytes(photo.read_bytes())
    proc = _run("catalog", "run", same, "-o", same, "--model", tiny, "-q")
    assert proc.returncode == 2 and "inside the output folder" in proc.stdout + proc.stderr
    (tmp_path / "folder.png").mkdir()
    proc = _run("matte", photo, "-o", tmp_path / "folder.png", "--model", tiny)
    assert proc.returncode == 2 and "is a folder" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_sku_csv_from_excel_a_cache_that_is_a_file_and_a_csv_that_contradicts_itself(tmp_path, tiny):
    _photos(tmp_path / "in", 2)
    csv = tmp_path / "skus.csv"
    csv.write_bytes("\ufeffp000.jpg,SKU-A\np001.jpg,SKU-B\n".encode("utf-8"))  # Excel's CSV UTF-8: a BOM first
    out = tmp_path / "out"
    out.mkdir()
    (out / ".cache").write_text("not a folder")
    proc = _run("catalog", "run", tmp_path / "in", "-o", out, "--model", tiny, "--sku-csv", csv, "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(r["sku"] for r in _rows(out)) == ["SKU-A", "SKU-B"]
    csv.write_text("p000.jpg,SKU-A\np000.jpg,SKU-C\n")
    proc = _run("catalog", "run", tmp_path / "in", "-o", tmp_path / "out2", "--model", tiny, "--sku-csv", csv, "-q")
    assert proc.returncode == 2 and "two SKUs" in proc.stdout + proc.stderr
