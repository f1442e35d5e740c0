"""The daemon never imports the web app, and `nordlys web` without the extra says what to install."""

from __future__ import annotations

import subprocess
import sys

from tests.waiting import DEADLINE

DAEMON_ONLY = """
import sys, pkgutil, importlib
import nordlys.daemon
for info in pkgutil.iter_modules(nordlys.daemon.__path__, "nordlys.daemon."):
    if info.name != "nordlys.daemon.__main__":
        importlib.import_module(info.name)
from nordlys.daemon.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
web = sorted(m for m in sys.modules if m.startswith(("nordlys.web", "starlette", "uvicorn", "prometheus_client", "jinja2")))
assert not web, web
print("clean")
"""

WITHOUT_EXTRA = """
import sys
sys.modules["starlette"] = None   # as if nordlys[web] were not installed
from nordlys.daemon.cli import main
sys.exit(main(["web", "--port", "1"]))
"""


def test_the_daemon_never_imports_the_web_app():
    proc = subprocess.run([sys.executable, "-c", DAEMON_ONLY], capture_output=True, text=True, timeout=DEADLINE)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stdout + proc.stderr


def test_web_without_its_extra_says_which_extra_to_install():
    proc = subprocess.run([sys.executable, "-c", WITHOUT_EXTRA], capture_output=True, text=True, timeout=DEADLINE)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "nordlys web: needs the web extras (starlette is not installed): pip install 'nordlys[web]'"]
