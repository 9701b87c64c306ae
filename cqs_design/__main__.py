"""``python -m cqs_design`` runs the ``cqs-design`` command line."""

import sys

from cqs_design.cli import main

if __name__ == "__main__":
    sys.exit(main())
