import sys

from nordlys.train.cli import main

sys.exit(main())
