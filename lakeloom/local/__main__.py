"""``python -m lakeloom.local ...`` runs ``lakeloom local ...`` (no console script needed)."""

import sys

from lakeloom.cli import main

sys.exit(main(["local", *sys.argv[1:]]))
