"""Fixtures shared by every test package: real files, real models, real folders."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import structlog

from tests.tiny_models import make_green_model

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: real labelled photos (never copied into the repo)."""
    path = SHARED / "data"
    if not (path / "manifest.csv").exists():
        pytest.skip(f"{path} not found: the shared photo set lies beside the checkout")
    return path


@pytest.fixture(scope="session")
def shared_samples() -> Path:
    """../shared/samples: real HEIC and RAW device files."""
    path = SHARED / "samples"
    if not path.exists():
        pytest.skip(f"{path} not found: the shared device samples lie beside the checkout")
    return path


@pytest.fixture
def green_model(tmp_path: Path) -> Path:
    """A tiny real ONNX model that calls saturated-green photos aurora."""
    return make_green_model(tmp_path / "models" / "green.onnx")


@pytest.fixture
def make_tree(tmp_path: Path):
    """Build a file tree from a dict: {"a/b.txt": b"bytes", "c/": None} -> paths under tmp_path."""

    def build(spec: dict[str, bytes | None], root: Path | None = None) -> Path:
        base = root or tmp_path
        for rel, content in spec.items():
            target = base / rel
            if content is None:
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
        return base

    return build


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail any test that leaves a thread running (observers, worker pools)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    for t in leaked:
        t.join(timeout=5)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked threads: {still}"


@pytest.fixture(autouse=True)
def fresh_logging():
    """Undo any structlog set-up a test made (the CLI configures it once per process, bound to the
    stderr of that moment, which pytest closes after the test)."""
    yield
    structlog.reset_defaults()
