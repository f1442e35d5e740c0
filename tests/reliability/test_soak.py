"""Soak in CI: 300 photos through one daemon with its RSS sampled, a short version of
`python -m tests.reliability.soak --photos 5000` (NORDLYS_LONG=1 runs that one here)."""

from __future__ import annotations

import os

from tests.reliability.soak import MAX_GROWTH, figures, run_soak

LONG = os.environ.get("NORDLYS_LONG") == "1"


def test_memory_stays_flat_after_warm_up(tmp_path, green_model):
    photos, wave, warmup = (5000, 250, 500) if LONG else (300, 50, 100)
    result = run_soak(tmp_path / "soak", green_model, photos=photos, wave=wave, warmup=warmup)
    print("\n" + figures(result, warmup))
    assert result.findings.ok, result.findings.problems()
    assert len(result.samples) > photos // wave, "RSS was not sampled through the run"
    assert result.growth < MAX_GROWTH, f"RSS grew {result.growth:.1%} after the warm-up: {result.samples}"
