import sys

from logloss.cli import main

sys.exit(main())
