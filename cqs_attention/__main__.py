"""``python -m cqs_attention`` runs the ``cqs-attention`` command line."""

from __future__ import annotations

import sys

from cqs_attention.cli import main

if __name__ == "__main__":
    sys.exit(main())
