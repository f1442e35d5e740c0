"""Model-only throughput: the network alone, on random input, in each runtime and precision.

PyTorch eager fp32 (at the faster of one thread and one per core: baseline.fastest_threads),
onnxruntime fp32 and int8 through nordlys's own Classifier session (so its graph optimisation
and thread settings are the ones measured). Each runtime runs in its own process
(bench.isolate), so their thread pools never compete.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

BATCHES = (1, 8)  # images per call


def images_per_second(run: Callable[[], object], batch: int, *, seconds: float, warmup: int = 2) -> float:
    """Calls `run` for at least `seconds` (and at least 3 times) after a warm-up."""
    for _ in range(warmup):
        run()
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < seconds:
        run()
        calls += 1
    return calls * batch / (time.perf_counter() - started)


def eager_throughput(backbone: str, weights: Path | None, *, batches: Sequence[int] = BATCHES,
                     seconds: float) -> dict[str, float]:
    """PyTorch eager fp32, inference mode, at its faster thread count: {"b1": images/s, "threads_b1": n, ...}."""
    import torch

    from bench.baseline import eager_model, fastest_threads

    model = eager_model(backbone, weights)
    result: dict[str, float] = {}
    with torch.inference_mode():
        for batch in batches:
            result[f"threads_b{batch}"] = fastest_threads(model, batch=batch)
            x = torch.randn(batch, 3, 224, 224)
            result[f"b{batch}"] = images_per_second(lambda: model(x), batch, seconds=seconds)
    return result


def onnx_throughput(models: dict[str, Path], *, batches: Sequence[int] = BATCHES, seconds: float,
                    slice_seconds: float = 0.25) -> dict[str, dict[str, float]]:
    """onnxruntime through nordlys's Classifier session, several models in one process, taking
    turns in short slices so that a drifting machine load hits each of them alike (their idle
    threads sleep: classifier.py turns spinning off). {name: {"b1": images/s, "b8": ...}}."""
    from nordlys.daemon.classifier import Classifier

    sessions = {name: Classifier(path, providers=("CPUExecutionProvider",)) for name, path in models.items()}
    rng = np.random.default_rng(0)
    result: dict[str, dict[str, float]] = {name: {} for name in models}
    for batch in batches:
        runs = {}
        for name, c in sessions.items():
            size = c.meta.input_size
            feed = {c.input_name: c.preprocess([rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                                                for _ in range(batch)])}
            runs[name] = (lambda c=c, feed=feed: c.session.run(None, feed))
        rates = alternating(runs, seconds=seconds, slice_seconds=slice_seconds)
        for name, rate in rates.items():
            result[name][f"b{batch}"] = rate * batch
    return result


def alternating(runs: dict[str, Callable[[], object]], *, seconds: float, slice_seconds: float) -> dict[str, float]:
    """Calls per second of each function, run in turns of slice_seconds until each had `seconds`."""
    calls = dict.fromkeys(runs, 0)
    spent = dict.fromkeys(runs, 0.0)
    for run in runs.values():
        run()  # warm-up: first-call allocations are not throughput
    while min(spent.values()) < seconds or min(calls.values()) < 3:
        for name, run in runs.items():
            started = time.perf_counter()
            while True:
                run()
                calls[name] += 1
                if time.perf_counter() - started >= slice_seconds:
                    break
            spent[name] += time.perf_counter() - started
    return {name: calls[name] / spent[name] for name in runs}
