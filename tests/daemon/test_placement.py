"""The one placement decision: thresholds, the review band, and paths that cannot escape."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from nordlys.daemon.placement import AURORA, OTHER, REJECTED, REVIEW, decide, destination_dir


@pytest.mark.parametrize("score, band, expected", [
    (0.9, 0.0, AURORA), (0.5, 0.0, AURORA), (0.4999, 0.0, OTHER),
    (0.45, 0.1, REVIEW), (0.4, 0.1, REVIEW), (0.39, 0.1, OTHER), (0.5, 0.1, AURORA),
    (None, 0.0, REJECTED), (float("nan"), 0.2, REJECTED),
])
def test_decide(score, band, expected):
    assert decide(score, threshold=0.5, band=band) == expected


@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 0.99))
def test_band_zero_never_reviews_and_order_is_monotonic(score, threshold, band):
    assert decide(score, threshold=threshold, band=0.0) in (AURORA, OTHER)
    ranks = {OTHER: 0, REVIEW: 1, AURORA: 2}
    assert ranks[decide(score, threshold=threshold, band=band)] <= ranks[decide(min(score + 0.1, 1.0), threshold=threshold, band=band)]


def test_destination_keeps_subfolders_only_when_asked():
    src = Path("/in/2026/trip/a.jpg")
    kw = dict(inbox=Path("/in"), output_root=Path("/out"), folder_name="aurora")
    assert destination_dir(src, keep_subfolders=False, **kw) == Path("/out/aurora")
    assert destination_dir(src, keep_subfolders=True, **kw) == Path("/out/aurora/2026/trip")
    assert destination_dir(Path("/elsewhere/a.jpg"), keep_subfolders=True, **kw) == Path("/out/aurora")


@given(st.lists(st.sampled_from(["..", ".", "a", "b c", "ü", "...", "x..y"]), max_size=6))
def test_destination_never_leaves_the_output_folder(parts):
    src = Path("/in").joinpath(*parts, "p.jpg")
    dest = destination_dir(src, inbox=Path("/in"), output_root=Path("/out"), folder_name="other", keep_subfolders=True)
    assert dest == Path("/out/other") or Path("/out/other") in dest.parents
    assert ".." not in dest.parts
