"""`nordlys retrain` and `nordlys rollback` on real files: a tiny real ONNX model, real photos,
a real journal with seeded corrections, the real CLI entry points.

The live model is the green test model: it calls every saturated-green photo aurora, so a
yellow-green field is its systematic mistake. Aurora photos are dark green, fields are bright
yellow-green, other photos grey: a linear head on the model's pooled colours can tell them apart.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from nordlys.daemon.classifier import Classifier
from nordlys.daemon.cli import main as nordlys
from nordlys.daemon.journal import Journal
from nordlys.daemon.loader import load_image
from nordlys.daemon.placement import Verdict
from nordlys.train.retrain import Labelled, balanced_accuracy, find_head, split_holdout
from tests.tiny_models import make_green_model

AURORA, FIELD, GREY = (10, 150, 10), (120, 200, 30), (120, 120, 120)


def jpeg(colour: tuple[int, int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.int16) + rng.integers(-12, 13, size=3)
    pixels = np.clip(base + rng.integers(-6, 7, size=(48, 64, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def setup(tmp_path: Path):
    """Live model, config, journal and a validation data folder (aurora/, other/)."""
    live = make_green_model(tmp_path / "model" / "live.onnx", size=32)
    data = tmp_path / "data"
    for i in range(12):
        write(data / "aurora" / f"a{i}.jpg", jpeg(AURORA, 1000 + i))
        write(data / "other" / f"g{i}.jpg", jpeg(GREY, 2000 + i))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"path": str(live)}, "journal": str(tmp_path / "state" / "journal.sqlite"),
                                      "log": {"format": "json", "level": "warning"}}))
    return tmp_path, live, data, config


def seed_corrections(tmp_path: Path, journal_path: Path, colour: tuple, count: int, *, old: str, new: str,
                     seed: int = 0) -> list[Path]:
    """Photos filed as `old` and moved by the user to `new`: journal entries + corrections."""
    paths = []
    with Journal.open(journal_path) as journal:
        for i in range(count):
            data = jpeg(colour, 5000 + seed + i)
            path = write(tmp_path / "sorted" / new / f"c{seed + i}.jpg", data)
            digest = hashlib.sha256(data).hexdigest()
            entry = journal.intent(None, source=tmp_path / "inbox" / path.name, dest=tmp_path / "sorted" / old / path.name,
                                   size=len(data), sha256=digest, verdict=Verdict(old, 0.99, model_version="green-test-1"),
                                   group_id=str(i))
            journal.done(entry, tmp_path / "sorted" / old / path.name)
            journal.record_correction(entry_id=entry, path=path, sha256=digest, old_label=old, new_label=new,
                                      score=0.99, model_version="green-test-1")
            paths.append(path)
    return paths


def scores(model: Path, photos: list[Path]) -> np.ndarray:
    c = Classifier(model, providers=("CPUExecutionProvider",))
    return c.score([load_image(p, size=c.meta.input_size, resize=c.meta.resize) for p in photos])


def test_retrain_fixes_the_corrected_mistake_and_rollback_restores_the_file(setup, capsys):
    tmp_path, live, data, config = setup
    original = live.read_bytes()
    fields = seed_corrections(tmp_path, tmp_path / "state" / "journal.sqlite", FIELD, 8, old="aurora", new="other")
    unseen = [write(tmp_path / "unseen" / f"f{i}.jpg", jpeg(FIELD, 9000 + i)) for i in range(6)]
    assert (scores(live, unseen) >= 0.5).all()  # the systematic mistake, before

    assert nordlys(["retrain", "--config", str(config), "--data", str(data)]) == 0
    assert "installed" in capsys.readouterr().out
    assert live.read_bytes() != original
    assert (scores(live, fields) < 0.5).all() and (scores(live, unseen) < 0.5).all()
    val_aurora = sorted((data / "aurora").glob("*.jpg"))
    assert (scores(live, val_aurora) >= 0.5).all()  # still finds the aurora
    assert Classifier(live, providers=("CPUExecutionProvider",)).version.startswith("green-test-1+r")
    with Journal.open(tmp_path / "state" / "journal.sqlite") as journal:
        history = journal.models()
    assert [m.status for m in history] == ["live"]
    assert history[0].metrics["held_out_right_after"] > history[0].metrics["held_out_right_before"]
    assert history[0].previous is not None and history[0].previous.read_bytes() == original

    assert nordlys(["status", "--config", str(config)]) == 0
    shown = capsys.readouterr().out
    assert "corrections: 8 (aurora -> other 8)" in shown and f"live        {history[0].version}" in shown

    assert nordlys(["rollback", "--config", str(config)]) == 0
    assert live.read_bytes() == original  # byte-identical
    with Journal.open(tmp_path / "state" / "journal.sqlite") as journal:
        assert [m.status for m in journal.models()] == ["rolled_back"]
    assert nordlys(["rollback", "--config", str(config)]) == 2  # nothing left to roll back
    assert "nothing to roll back" in capsys.readouterr().err


def test_a_worse_model_is_refused_and_the_live_model_stays(setup, capsys):
    tmp_path, live, data, config = setup
    original = live.read_bytes()
    # "corrections" that call real aurora photos other: learning them ruins validation recall
    seed_corrections(tmp_path, tmp_path / "state" / "journal.sqlite", AURORA, 8, old="aurora", new="other")
    assert nordlys(["retrain", "--config", str(config), "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "validation balanced accuracy drops" in err
    assert live.read_bytes() == original
    with Journal.open(tmp_path / "state" / "journal.sqlite") as journal:
        (record,) = journal.models()
    assert record.status == "refused" and record.path.is_file()


def test_too_few_corrections_are_explained_and_start_no_learned_model(setup, tmp_path, capsys):
    _, live, data, config = setup
    assert nordlys(["retrain", "--config", str(config), "--data", str(data)]) == 2
    assert "expected at least 2" in capsys.readouterr().err
    bare = tmp_path / "bare.yaml"  # no model.path: the learned model beside the journal, not started yet
    bare.write_text(yaml.safe_dump({"journal": str(tmp_path / "j.sqlite")}))
    assert nordlys(["retrain", "--config", str(bare)]) == 2
    assert "expected at least 2" in capsys.readouterr().err
    assert not (tmp_path / "model.onnx").exists()


def test_head_of_the_bundled_int8_model_is_found():
    import onnx
    from nordlys.daemon.paths import bundled_model_path
    head = find_head(onnx.load(str(bundled_model_path())))
    assert head.weight.shape == (1280, 2) and np.isfinite(head.weight).all()


def test_holdout_split_and_balanced_accuracy():
    photos = [Labelled(Path(f"/p/{i}.jpg"), i % 2) for i in range(8)]
    learn, held = split_holdout(photos, 0.25)
    assert len(held) == 2 and len(learn) == 6 and not {p.path for p in learn} & {p.path for p in held}
    assert split_holdout(photos[:1], 0.25) == (photos[:1], [])
    y = np.array([0, 0, 1, 1])
    assert balanced_accuracy(y, np.array([0.1, 0.9, 0.9, 0.9]), 0.5) == pytest.approx(0.75)
