"""benchmarks/highres.py at tiny sizes: the table's structure, each size in its own process, a
time, a peak RSS and stage shares that add up; no wall-clock thresholds."""

from __future__ import annotations

import json

import pytest

from cvmatte.benchmarks import highres


def test_highres_table_by_size(tmp_path):
    out = tmp_path / "highres"
    result = highres.main(["--sizes", "0.6", "0.3", "--repeats", "1", "--probe", "--out", str(out)])

    rows = result["rows"]
    assert [r["megapixels"] for r in rows] == [0.3, 0.6]  # smallest first, the ratios' base
    assert result["base_megapixels"] == 0.3
    for r in rows:
        assert "error" not in r, r.get("error")
        assert r["width"] * r["height"] == pytest.approx(r["megapixels"] * 1e6, rel=0.02)
        assert r["seconds"] > 0 and r["row_total_s"] > 0
        assert r["tiles"] >= 1  # larger than the model's input: the band is refined in tiles
        # The child's own peak, after the model was loaded: a real process's resident memory.
        assert r["peak_rss"] >= r["rss_loaded"] > 10e6 and r["peak_over_loaded"] >= 0
        assert set(r["shares"]) == set(highres.STAGES) | {"other"}
        assert all(r["stage_s"][s] >= 0 for s in highres.STAGES)
        assert sum(r["shares"].values()) == pytest.approx(1.0)
        # The stage timers cover the row's time: little is left to "other".
        assert sum(r["shares"][s] for s in highres.STAGES) == pytest.approx(1.0, abs=0.2)
        [run] = r["runs"]
        assert run["row"]["status"] in ("ok", "review") and run["row"]["outputs"]["rgba"].endswith(".png")
        assert sum(run["output_bytes"].values()) > 0
        # --probe: every step of the path alone, each with its seconds and its peak of arrays.
        probe = r["probe"]
        assert "error" not in probe, probe.get("error")
        assert (probe["width"], probe["height"]) == (r["width"], r["height"]) and probe["tiles"] == r["tiles"]
        names = [st["step"] for st in probe["steps"]]
        assert names[0].startswith("decode") and names[-1] == "encode RGBA PNG" and len(names) == 12
        assert all(st["seconds"] >= 0 and st["peak_bytes"] >= 0 for st in probe["steps"])
        assert 0 < probe["shares"]["band"] <= 1 and 0 < probe["shares"]["foreground_crop"] <= 1
    assert rows[0]["ratio"] == pytest.approx(1.0) and rows[1]["ratio"] > 0
    # Two sizes, two fresh processes: each loaded the model itself.
    assert rows[0]["runs"][0]["load_s"] > 0 and rows[1]["runs"][0]["load_s"] > 0

    saved = json.loads((out / "highres.json").read_text())
    assert [r["megapixels"] for r in saved["rows"]] == [0.3, 0.6] and saved["stages"] == highres.STAGES
    md = (out / "highres.md").read_text()
    assert saved["command"] in md and "--sizes 0.6 0.3" in md
    assert f"{result['machine']['cores']} cores" in md
    table = [line for line in md.splitlines() if line.startswith("| 0.3 |") or line.startswith("| 0.6 |")]
    assert len(table) == 4  # a row per size in the main table and in the stage seconds
    assert "| foreground (blur-fusion) |" in md and "0.6 MP: s, peak MB" in md
    header = next(line for line in md.splitlines() if line.startswith("| MP | pixels"))
    assert "x 0.3 MP" in header and "peak RSS MB" in header and "refine" in header
    assert "| 0.3 | 632x474 |" in md


def test_a_failed_size_is_a_row_not_a_crash():
    rows = [highres.summarize(1, (1155, 866), 1000, [{"wall_s": 1.0, "row": {
                "status": "ok", "tiles": 3, "flags": [], "timings": {**{s: 0.1 for s in highres.STAGES},
                                                                     "total_s": 0.7}},
                "output_bytes": {"rgba": 10}, "peak_rss": 5e8, "rss_loaded": 1e8, "rss_warm": 3e8,
                "engine": "e"}]),
            highres.summarize(50, (8165, 6124), 1000, [{"error": "killed by signal 9 (out of memory?)",
                                                        "ran_s": 80.0}])]
    assert highres.add_ratios(rows) == 1
    assert rows[0]["shares"]["other"] == pytest.approx(1 - 0.6 / 0.7)
    lines = highres.table(rows, 1)
    assert "failed after 80 s: killed by signal 9" in lines[-1]
    assert lines[-1].count("|") == lines[0].count("|")
    assert any("50 MP: no result" in t for t in highres.targets(rows))
