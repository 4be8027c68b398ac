"""``python -m lakeloom.sim``: the provider simulator."""

import sys

from lakeloom.sim.cli import main

sys.exit(main())
