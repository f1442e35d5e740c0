"""`nordlys eval` on real files with a real ONNX model, against a confusion matrix done by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from nordlys.export import eval_cli
from tests.train.photos import flat_photo

GREEN, GREY = (40, 200, 60), (120, 120, 120)


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """4 auroras (3 green, 1 grey) and 6 others (2 green, 4 grey), in a manifest with kinds.

    The green model calls green aurora: TP 3, FN 1, FP 2, TN 4.
    """
    rows = ["file,label,kind,group"]
    for i, (label, colour, kind) in enumerate(
            [("aurora", GREEN, "photo")] * 3 + [("aurora_allsky", GREY, "allsky")]
            + [("other", GREEN, "hard_negative")] * 2 + [("other", GREY, "everyday")] * 3
            + [("other", GREY, "hard_negative")]):
        flat_photo(tmp_path / "photos" / f"p{i}.jpg", colour)
        rows.append(f"photos/p{i}.jpg,{label},{kind},g{i}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "manifest.csv"


def test_eval_matches_the_hand_worked_confusion_matrix(green_model: Path, labelled: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    assert eval_cli.main(["--model", str(green_model), "--manifest", str(labelled), "--report", str(report)]) == 0
    m = json.loads((report / "metrics.json").read_text())
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 2, 4)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(6 / 9)
    assert m["fpr"] == pytest.approx(2 / 6)
    assert m["per_kind"]["hard_negative"]["fpr"] == pytest.approx(2 / 3)
    assert m["per_kind"]["everyday"]["fpr"] == pytest.approx(0.0)
    assert m["per_kind"]["allsky"]["recall"] == pytest.approx(0.0)
    assert m["roc_auc"] == pytest.approx((3 * 4 + 0.5 * 3 * 2 + 0.5 * 1 * 4) / 24, abs=0.01)
    page = (report / "report.html").read_text()
    assert page.count('<svg class="chart"') == 2  # ROC and score histograms, inline: no plotting library
    assert '<table class="confusion">' in page
    assert page.count("<figure>") == 3  # 1 missed aurora + 2 false alarms, each with its score
    assert len(list((report / "thumbs").glob("*.jpg"))) == 3
    assert {r["threshold"] for r in m["sweep"]} >= {0.05, 0.5, 0.95}


def test_eval_of_a_data_folder_with_an_unreadable_photo(green_model: Path, tmp_path: Path) -> None:
    flat_photo(tmp_path / "d" / "aurora" / "x" / "a.jpg", GREEN)
    flat_photo(tmp_path / "d" / "other" / "o.jpg", GREY)
    (tmp_path / "d" / "other" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    report = tmp_path / "r"
    assert eval_cli.main(["--model", str(green_model), "--data", str(tmp_path / "d"), "--report", str(report)]) == 0
    m = json.loads((report / "metrics.json").read_text())
    assert (m["tp"], m["tn"], m["unreadable"]) == (1, 1, 1)
    assert m["unreadable_files"][0]["path"].endswith("broken.jpg")


def test_eval_needs_no_torch(green_model: Path, labelled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "torch" or n.startswith(("torch.", "torchvision", "nordlys.export", "nordlys.train"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    from nordlys.export import eval_cli as fresh

    assert fresh.main(["--model", str(green_model), "--manifest", str(labelled), "--report", str(tmp_path / "r")]) == 0


def test_eval_of_a_missing_model_is_an_error_for_people(labelled: Path, tmp_path: Path, capsys) -> None:
    assert eval_cli.main(["--model", str(tmp_path / "nope.onnx"), "--manifest", str(labelled),
                          "--report", str(tmp_path / "r")]) == 3
    assert "nope.onnx" in capsys.readouterr().err


def test_eval_of_one_side_of_a_runs_split(green_model: Path, labelled: Path, tmp_path: Path) -> None:
    from nordlys.train.data import read_manifest, write_split

    samples = read_manifest(labelled)
    write_split(tmp_path / "split.csv", samples[:3], samples[3:])
    report = tmp_path / "r"
    args = ["--model", str(green_model), "--manifest", str(tmp_path / "split.csv"), "--split", "val", "--report", str(report)]
    assert eval_cli.main(args) == 0
    m = json.loads((report / "metrics.json").read_text())
    assert m["count"] == 7 and (m["tp"], m["fn"], m["fp"], m["tn"]) == (0, 1, 2, 4)
    assert eval_cli.main(["--model", str(green_model), "--data", str(tmp_path), "--split", "val", "--report", str(report)]) == 2
