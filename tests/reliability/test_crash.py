"""Crash trials in CI: a short version of `python -m tests.reliability.crash_trials --trials 20`.

Two trials of a 200-photo burst (with sidecars and truncated JPEGs), the daemon SIGKILLed twice
in each at random moments and restarted at once; then every input must be found exactly once,
unaltered, in its folder, and the journal must agree with the disk. NORDLYS_LONG=1 runs the
full 20 x 1,000. The seed is random and printed, so a failure can be replayed with --seed.
"""

from __future__ import annotations

import os
import random

from tests.reliability.crash_trials import figures, run_trials

LONG = os.environ.get("NORDLYS_LONG") == "1"


def test_sigkill_at_random_moments_loses_nothing(tmp_path, green_model):
    seed = int(os.environ.get("NORDLYS_SEED") or random.randrange(1 << 30))
    trials, photos = (20, 1000) if LONG else (2, 200)
    results = run_trials(tmp_path, green_model, trials=trials, photos=photos, kills=3 if LONG else 2, seed=seed)
    print(f"\nseed {seed}\n{figures(results)}")
    for r in results:
        assert r.ok, f"seed {r.seed}: {r.findings.problems()}\n" + "\n".join(r.errors[:10])
    assert sum(r.kills_mid_burst for r in results) >= 1, f"seed {seed}: no kill landed while photos waited"
