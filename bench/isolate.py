"""Run one measurement in a fresh process.

PyTorch and onnxruntime each keep a thread pool whose idle threads spin for a while after
work; in one process they would steal each other's cores and skew every ratio. A fresh
process per contender also means nordlys is measured the way it runs: without torch loaded.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def isolated(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """func(*args, **kwargs) in a spawned child process; its result (picklable) comes back."""
    context = multiprocessing.get_context("spawn")  # fork would inherit the parent's thread pools
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(func, *args, **kwargs).result()
