"""The Singer construction: a cyclic ``(q²+q+1, q+1, 1)`` difference set for every prime power q.

Let ``f`` be a primitive cubic over GF(q) and ``x`` a root, so ``x`` generates GF(q³)*.
Write ``x^i = a_i + b_i x + s_i x²`` with coefficients in GF(q). Because ``x^v ∈ GF(q)`` for
``v = q² + q + 1``, the set

    D = { i in [0, v) : s_i = 0 }   (the exponents with ``x^i`` in the plane span{1, x})

is a line of the projective plane PG(2, q), and multiplication by ``x`` (a collineation that
cycles all ``v`` points) turns it into a cyclic difference set with ``k = q + 1``, ``λ = 1``.

The coefficient sequence ``s`` is a linear recurring sequence of order 3. Since
``s_{j+n} = u_0 s_j + u_1 s_{j+1} + u_2 s_{j+2}`` where ``x^n = u_0 + u_1 x + u_2 x²``, the
known prefix ``s[0:n]`` gives the next ``n - 2`` terms in one vectorised step (three table
look-ups and two GF(q) additions over numpy arrays), so ``log2(v)`` steps build all ``v`` terms.

For ``v >= 2**15`` the construction does not even touch all ``v`` exponents: ``D`` is ``{0}``
plus the discrete logarithms of the ``q`` points ``[c + x]`` of the line, found together by a
vectorised baby-step giant-step search in ``O(q^1.5)`` time and memory (see
:func:`cqs_design.singer.construction._singer_exponents_bsgs`).  Past ``q = 8192``
(``_TRACE_MIN_Q``) that memory, ``O(v^0.75)``, grows too fast, and
:mod:`cqs_design.singer.trace` takes over: the line ``ker Tr`` of the same plane, one logarithm
per Frobenius orbit, and a baby table of ``64 q`` entries, so memory is ``O(q) = O(sqrt(v))``.
All routes give the same normalized set; the tests compare them with each other and with a
scalar reference.

The limit :data:`SINGER_MAX_Q` = 65536 (``v`` about 4.3·10^9) is set by time, not memory:
the giant steps cost about ``q² / (3m · 64 · 2)`` point look-ups (``q = p^m``) and checking the
result (:meth:`DifferenceSet.verify`) touches all ``v - 1`` differences; at the limit that
measured 18 s to build and 5 minutes to verify on a loaded 2-core machine
(docs/difference_sets.md has the table).

The package holds three modules: :mod:`~cqs_design.singer.cubic` (the arithmetic of GF(q³)
every route shares: the field, the primitive cubic, the coefficient sequence, projective point
keys and the giant steps), :mod:`~cqs_design.singer.construction` (the public functions, the
sequence and baby-step giant-step routes and the choice of route) and
:mod:`~cqs_design.singer.trace` (the ``O(sqrt(v))``-memory route past ``q = 8192``).

>>> from cqs_design import singer_difference_set
>>> singer_difference_set(3)
DifferenceSet(13, (0, 1, 3, 9))
>>> singer_difference_set(4).verify().elements
(0, 1, 4, 14, 16)
"""

from __future__ import annotations

from cqs_design.singer.construction import SINGER_MAX_Q, is_prime_power, singer_difference_set
from cqs_design.singer.cubic import primitive_cubic

__all__ = ["SINGER_MAX_Q", "is_prime_power", "primitive_cubic", "singer_difference_set"]
