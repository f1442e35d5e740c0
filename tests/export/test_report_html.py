"""The eval report as a reader sees it (issue 14, point 6), read from the HTML `nordlys eval` writes:
charts readable (no CSS rule shrinking every image), one column per misfiled photo with its caption
inside it, thumbnails linking to the photo, and a warning when the model was trained on some of the
evaluated photos (the digests export writes into nordlys.training_files)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from nordlys.daemon.contract import ModelMeta, to_metadata, training_digest
from tests.tiny_models import make_green_model
from tests.train.photos import flat_photo

GREEN, GREY = (40, 200, 60), (120, 120, 120)


class Page(HTMLParser):
    """The elements the checks need: CSS text, figures with their links, images and captions."""

    def __init__(self) -> None:
        super().__init__()
        self.css, self.figures, self.svgs, self.warnings = "", [], 0, []
        self._stack: list[str] = []
        self._figure: dict | None = None
        self._warning: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._stack.append(tag)
        if tag == "svg" and "chart" in (a.get("class") or ""):
            self.svgs += 1
        if tag == "figure":
            self._figure = {"links": [], "img": None, "caption": ""}
        if self._figure is not None and tag == "a":
            self._figure["links"].append(a.get("href"))
        if self._figure is not None and tag == "img":
            self._figure["img"] = (a.get("src"), "a" in self._stack[:-1])
        if tag == "div" and a.get("class") == "warning":
            self._warning = []

    def handle_endtag(self, tag: str) -> None:
        if self._stack:
            self._stack.pop()
        if tag == "figure" and self._figure is not None:
            self.figures.append(self._figure)
            self._figure = None
        if tag == "div" and self._warning is not None:
            self.warnings.append("".join(self._warning))
            self._warning = None

    def handle_data(self, data: str) -> None:
        if self._stack and self._stack[-1] == "style":
            self.css += data
        if self._figure is not None and "figcaption" in self._stack:
            self._figure["caption"] += data
        if self._warning is not None:
            self._warning.append(data)


def labelled_set(root: Path) -> list[Path]:
    """2 green auroras, 1 grey aurora (missed), 2 grey others, 2 green others (false alarms);
    names long enough to need wrapping in a caption."""
    paths: list[Path] = []
    for label, colour, n in (("aurora", GREEN, 2), ("aurora", GREY, 1), ("other", GREY, 2), ("other", GREEN, 2)):
        for i in range(n):
            name = f"{label}_{'green' if colour == GREEN else 'grey'}_{i}_IMG_20261130_221501_a_rather_long_name.jpg"
            paths.append(flat_photo(root / label / name, colour, size=(40 + len(paths), 30)))  # unique bytes each
    return paths


def model_listing(path: Path, train: list[Path], val: list[Path]) -> Path:
    """The green model, its metadata listing some photos as its training and validation split."""
    def digests(photos: list[Path]) -> list[str]:
        return [training_digest(hashlib.sha256(p.read_bytes()).hexdigest()) for p in photos]

    meta = ModelMeta(labels=("other", "aurora"), input_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                     threshold=0.5, version="green-listed-1", training_files={"train": digests(train),
                                                                               "val": digests(val)})
    return make_green_model(path, metadata=to_metadata(meta))


def run_eval(tmp_path: Path, model: Path, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nordlys.daemon", "eval", "--model", str(model), "--data", str(data),
                           "--report", str(tmp_path / "report")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)})


def test_report_is_readable_and_links_each_misfiled_photo(tmp_path: Path) -> None:
    photos = labelled_set(tmp_path / "data")
    model = model_listing(tmp_path / "m.onnx", train=photos[:2], val=photos[5:6])
    result = run_eval(tmp_path, model, tmp_path / "data")
    assert result.returncode == 0, result.stderr
    page = Page()
    page.feed((tmp_path / "report" / "report.html").read_text())

    # charts: inline, and no rule that caps the size of every image (it shrank the plots to 160 px)
    assert page.svgs == 2
    assert not re.search(r"(^|\})\s*img\s*\{", page.css, re.M), page.css  # a bare `img{...}` rule
    assert "160px" not in page.css
    # misfiled: 1 missed aurora + 2 false alarms, each a figure whose thumbnail links to the photo
    assert len(page.figures) == 3
    misfiled = {p.name: p for p in photos if "grey" in p.name and "aurora" in p.name[:6]
                or "green" in p.name and p.name.startswith("other")}
    for figure in page.figures:
        src, linked = figure["img"]
        assert linked and (tmp_path / "report" / src).is_file()
        name = next(n for n in misfiled if n in figure["caption"])
        assert figure["links"] == [misfiled[name].absolute().as_uri()] * 2  # the thumbnail and the file name
        assert "score" in figure["caption"]
    # captions stay in their column: a grid of fixed-width cells whose text may break anywhere
    assert re.search(r"\.photos\{[^}]*display:grid", page.css)
    assert re.search(r"figcaption\{[^}]*overflow-wrap:anywhere", page.css)
    # the overlap warning, on the page and in one line on stderr
    assert len(page.warnings) == 1
    assert "2 in its train split" in page.warnings[0] and "1 in its val split" in page.warnings[0]
    for p in (*photos[:2], photos[5]):
        assert str(p) in page.warnings[0]
    assert "warning: the model has seen some of these photos (2 in its train split, 1 in its val split)" in result.stderr


def test_no_warning_when_the_model_never_saw_these_photos(tmp_path: Path) -> None:
    labelled_set(tmp_path / "data")
    elsewhere = [flat_photo(tmp_path / "training" / f"t{i}.jpg", GREEN, size=(50 + i, 30)) for i in range(3)]
    result = run_eval(tmp_path, model_listing(tmp_path / "m.onnx", train=elsewhere, val=[]), tmp_path / "data")
    assert result.returncode == 0, result.stderr
    page = Page()
    page.feed((tmp_path / "report" / "report.html").read_text())
    assert page.warnings == [] and "warning" not in result.stderr
    assert "None of these photos was in the model's training or validation split" in (
        tmp_path / "report" / "report.html").read_text()
