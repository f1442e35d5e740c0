"""`python -m nordlys.daemon` is the `nordlys` command."""

import sys

from nordlys.daemon.cli import main

sys.exit(main())
