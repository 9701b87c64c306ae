"""cqs_attention: exact, memory-adaptive streamed attention driven by cqs_design plans."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
