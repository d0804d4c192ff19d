"""``python -m zeroflow.cli``."""

import sys

from zeroflow.cli import main

sys.exit(main())
