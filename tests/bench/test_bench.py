"""The benchmark runs end to end on a tiny setting and writes its figures; no timing is asserted.

`python -m bench` runs as a subprocess from the repository root, as a person would run it, on
4 camera JPEGs made from ../shared/data, MobileNetV2 only, a 4-photo daemon burst. Generated
photos and models go to bench/.cache/ (git-ignored), so a second run reuses them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bench import table
from bench.daemon_latency import p95
from bench.photos import FRAMES, camera_photos

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_bench_writes_every_figure(tmp_path, shared_data):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--images", "4", "--backbones", "mobilenet_v2", "--seconds", "0.2",
         "--latency", "2", "--burst", "4", "--data", str(shared_data), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert {"machine", "settings", "end_to_end", "decode_limit", "model_only", "int8_accuracy", "daemon",
            "targets"} <= set(results)
    assert results["machine"]["nproc"] >= 1 and results["machine"]["cpu_model"]

    e2e = results["end_to_end"]["12mp"]["mobilenet_v2"]
    assert e2e["baseline"]["images"] == 4 and e2e["nordlys"]["images"] == 4
    assert e2e["nordlys"]["failed"] == 0 and sum(e2e["nordlys"]["folders"].values()) == 4
    assert e2e["ratio"] == pytest.approx(e2e["nordlys"]["images_per_s"] / e2e["baseline"]["images_per_s"])
    limit = results["decode_limit"]["12mp"]
    assert limit["images"] == 4 and limit["nordlys_percent"] > 0

    models = results["model_only"]["mobilenet_v2"]
    for runtime in ("eager_fp32", "ort_fp32", "ort_int8"):
        assert models[runtime]["b1"] > 0 and models[runtime]["b8"] > 0
    assert set(models["int8_vs_fp32"]) == {"b1", "b8"}

    daemon = results["daemon"]
    assert daemon["latency_s"]["photos"] == 2 and daemon["burst"]["photos"] == 4
    assert daemon["exit_code"] == 0 and daemon["rss_mb"]["peak"] >= daemon["rss_mb"]["idle"] > 0
    assert results["int8_accuracy"]["loss_points"] is not None

    assert set(results["targets"]) == set(table.TARGETS) - {"int8_vs_fp32"} | {"int8_vs_fp32_mobilenet_v2"}
    assert "| target | value | wanted | met |" in proc.stdout and str(out) in proc.stdout


def test_camera_photo_is_a_12mp_jpeg_with_exif(tmp_path, shared_data):
    [photo] = camera_photos(shared_data, tmp_path, frame="12mp", count=1)
    assert photo.parent == tmp_path / "12mp"
    with Image.open(photo) as image:
        assert image.format == "JPEG" and sorted(image.size, reverse=True) == list(FRAMES["12mp"])
        exif = image.getexif()
    assert exif[0x010F] == "NORDLYS-BENCH" and exif[0x0112] == 1 and exif[0x0132].startswith("2026:")
    assert photo.stat().st_size > 1_000_000  # grain keeps it camera-sized, not a smooth upscale
    assert camera_photos(shared_data, tmp_path, frame="12mp", count=1) == [photo]  # cached


def test_targets_compare_each_figure_the_right_way():
    results = {"end_to_end": {"12mp": {"mobilenet_v2": {"ratio": 7.0}}},
               "decode_limit": {"12mp": {"nordlys_percent": 79.9}},
               "model_only": {"a": {"int8_vs_fp32": {"b8": 3.0}}, "b": {"int8_vs_fp32": {"b8": 2.4}}},
               "int8_accuracy": {"loss_points": 0.5}, "daemon": {"latency_s": {"p95": 0.6}, "rss_mb": {"peak": 100.0}}}
    met = {key: t["met"] for key, t in table.targets(results).items()}
    assert met == {"e2e_ratio_12mp": True, "percent_of_decode_limit_12mp": False, "int8_vs_fp32_a": True,
                   "int8_vs_fp32_b": False, "int8_accuracy_loss_points": True, "latency_p95_s": False,
                   "daemon_peak_rss_mb": True}
    assert table.targets({})["latency_p95_s"]["met"] is None  # not measured is not "met"


def test_p95_is_an_observed_value():
    assert p95([0.1] * 19 + [9.0]) == 0.1
    assert p95([float(i) for i in range(1, 101)]) == 95.0
    assert p95([0.3]) == 0.3


def test_int8_variants_pick_the_float_nodes_they_name():
    """bench/int8_variants.py leaves these convolutions in float: the stem, the first depthwise, every depthwise."""
    from onnx import TensorProto, helper

    from bench.int8_variants import all_depthwise, stem, stem_and_first_depthwise, variants

    def conv(name, group):
        return helper.make_node("Conv", ["x", "w"], [name], name=name, group=group)

    graph = helper.make_graph([conv("stem", 1), helper.make_node("Relu", ["stem"], ["r"], name="relu"),
                               conv("dw1", 32), conv("pw1", 1), conv("dw2", 96)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("dw2", TensorProto.FLOAT, None)])
    model = helper.make_model(graph)
    assert stem(model) == ["stem"]
    assert stem_and_first_depthwise(model) == ["stem", "dw1"]
    assert all_depthwise(model) == ["dw1", "dw2"]
    assert list(variants())[0].startswith("shipped") and variants()[next(iter(variants()))] == {}


@pytest.mark.slow
def test_revisions_compares_a_commit_with_the_working_tree(shared_data):
    """bench/revisions.py imports each revision's daemon from its own extracted copy."""
    proc = subprocess.run([sys.executable, "-m", "bench.revisions", "HEAD", ".", "--rounds", "1", "--images", "2",
                           "--burst", "2", "--data", str(shared_data)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sort_table, burst_table = proc.stdout.split("`nordlys watch`")
    rows = [line for line in sort_table.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| HEAD", "| .", "| decode-bound limit"]
    assert all(float(r.split(" | ")[1]) > 0 for r in rows[1:])
    bursts = [line.split(" | ") for line in burst_table.splitlines() if line.startswith("| ")][1:]
    assert [b[0] for b in bursts] == ["| HEAD", "| ."] and all(float(b[1]) > 0 for b in bursts)


def test_revisions_extracts_the_daemon_of_a_commit(tmp_path):
    from bench.revisions import REPO as ROOT, extract

    assert extract(".", tmp_path) == ROOT
    root = extract("HEAD", tmp_path)
    assert (root / "nordlys" / "daemon" / "pipeline.py").is_file()
    assert not (root / "nordlys" / "train").exists()  # only the daemon is swapped


def test_filing_bench_counts_commits_and_fsyncs_alone_and_in_batches(tmp_path):
    """bench/filing.py: the journal commits (each one an fsync) per photo do not depend on the machine."""
    proc = subprocess.run([sys.executable, "-m", "bench.filing", "--photos", "16", "--batch", "8", "--rounds", "1",
                           "--dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r.split(" | ")[0]: r.split(" | ")[1:] for r in proc.stdout.splitlines() if r.startswith("| ") and "---" not in r}
    # directory fsyncs: alone, one after each link and one after each unlink; in batches the source
    # folder's once a batch (2/16); making out/ adds one (1/16)
    for name, commits, fsyncs in (("| one group at a time", "2.000", 2.06), ("| batches of 8", "0.250", 1.19)):
        assert rows[name][1] == commits
        assert float(rows[name][2].rstrip(" |")) == fsyncs
    assert list(tmp_path.iterdir()) == []  # its folders are removed again
