"""`python -m rotator` is the `rotator` command."""

import sys

from rotator.cli import main

sys.exit(main())
