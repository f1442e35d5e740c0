import sys

from nordlys.export.cli import main

sys.exit(main())
