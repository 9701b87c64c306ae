"""Subsets of ``Z_v`` as Python integers: bit ``i`` set means residue ``i`` is in the set.

The exhaustive searches (:mod:`cqs_design.search`, :mod:`cqs_design.quorum`) keep the chosen
set ``S``, its negative ``-S`` and the differences covered so far as such bitsets, so adding an
element costs a few shifts instead of a scan.

>>> bin(rotate(0b0011, 3, 4, 0b1111))
'0b1001'
>>> s, r = 0b011, 0b101  # S = {0, 1} and -S = {0, 2} in Z_3
>>> bin(new_differences(s, r, 2, 3, 0b111))  # 2 - 0, 2 - 1, 0 - 2, 1 - 2 = {2, 1, 1, 2}
'0b110'
"""

from __future__ import annotations

__all__ = ["new_differences", "rotate"]


def rotate(x: int, s: int, v: int, full: int) -> int:
    """The set ``x + s`` (mod ``v``): cyclic left rotation of the ``v``-bit integer ``x``
    by ``s``; ``full`` is ``2**v - 1``."""
    s %= v
    return ((x << s) | (x >> (v - s))) & full


def new_differences(s: int, r: int, x: int, v: int, full: int) -> int:
    """The differences ``x - d`` and ``d - x`` (``d`` in ``S``) that adding ``x`` to ``S``
    brings, given ``s`` = ``S`` and ``r`` = ``-S``."""
    return rotate(r, x, v, full) | rotate(s, v - x, v, full)
