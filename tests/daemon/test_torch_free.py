"""The daemon must run where torch is not installed: importing it must not touch torch."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
sys.modules["torch"] = None          # any `import torch` now raises ImportError
sys.modules["torchvision"] = None
sys.modules["ray"] = None             # nor the cluster extra (nordlys.cluster)
sys.modules["pyarrow"] = None
import pkgutil, importlib
import nordlys.daemon
for info in pkgutil.iter_modules(nordlys.daemon.__path__, "nordlys.daemon."):
    if info.name != "nordlys.daemon.__main__":
        importlib.import_module(info.name)
from nordlys.daemon.cli import main
assert main(["--help"]) == 0
"""


def test_daemon_imports_without_torch():
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    # argparse --help exits via SystemExit(0) after printing usage
    assert proc.returncode == 0, proc.stderr
    assert "classify" in proc.stdout and "sort" in proc.stdout
    assert "nordlys.train" not in proc.stderr
