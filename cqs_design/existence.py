"""Existence of cyclic projective planes (cyclic planar difference sets) of order n.

A cyclic planar difference set of order ``n`` has ``v = n^2 + n + 1`` and ``k = n + 1``.
:func:`existence` classifies an order and keeps the evidence:

* ``"exists"`` -- ``n`` is a prime power: Singer's construction, built and verified here;
* ``"impossible"`` -- either the Bruck-Ryser-Chowla theorem (``n = 1, 2 mod 4`` and ``n`` not a
  sum of two squares; the computation is recorded), or a completed exhaustive search over unions
  of multiplier orbits run by this code (Hall's multiplier theorem; statistics recorded);
* ``"open"`` -- not decided by this code.  The literature settles every such order up to
  2*10^9: Baumert and Gordon (2004) report a computer verification that no cyclic projective
  plane of non-prime-power order ``n <= 2*10^9`` exists (extending Gordon 1994, ``n < 2*10^6``).
  We cite it in ``published`` but never claim it as a proof we ran.

>>> existence(4).status, existence(6).status, existence(10).status
('exists', 'impossible', 'impossible')
>>> existence(10).method
'exhaustive-multiplier-search'
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "PUBLISHED_VERIFICATION",
    "ExistenceRecord",
    "bruck_ryser_chowla",
    "existence",
    "existence_table",
    "format_table",
    "prime_power",
    "sum_of_two_squares",
]

#: The published computer verification of the prime power conjecture for cyclic planes.
PUBLISHED_VERIFICATION = (
    "L. D. Baumert and D. M. Gordon, On the existence of cyclic difference sets with small "
    "parameters, in High Primes and Misdemeanours (Fields Inst. Commun. 41), AMS 2004, "
    "pp. 61-68 (arXiv:math/0304502): no cyclic projective plane of non-prime-power order "
    "n <= 2*10^9 exists (computer verification, extending D. M. Gordon, The prime power "
    "conjecture is true for n < 2,000,000, Electron. J. Combin. 1 (1994) R6)"
)
PUBLISHED_BOUND = 2 * 10**9

#: Orders at most this are decided by an exhaustive multiplier-orbit search by default.
DEFAULT_SEARCH_MAX_ORDER = 20
MAX_ORDER = 10**6

Status = Literal["exists", "impossible", "open"]


@dataclass(frozen=True)
class ExistenceRecord:
    """What is known about a cyclic projective plane of order ``n``.

    ``method`` is one of ``"singer"``, ``"bruck-ryser-chowla"``,
    ``"exhaustive-multiplier-search"`` or ``"none"``; ``evidence`` is JSON-ready (the Singer
    set, the BRC computation, or the search statistics); ``seconds`` the time spent deciding;
    ``computed`` whether this code established the status itself.
    """

    order: int
    v: int
    k: int
    status: Status
    reason: str
    method: str
    evidence: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    computed: bool = True
    published: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# number theory helpers
# --------------------------------------------------------------------------------------------
def _factor(n: int) -> dict[int, int]:
    out: dict[int, int] = {}
    p = 2
    while p * p <= n:
        while n % p == 0:
            out[p] = out.get(p, 0) + 1
            n //= p
        p += 1 if p == 2 else 2
    if n > 1:
        out[n] = out.get(n, 0) + 1
    return out


def prime_power(n: int) -> tuple[int, int] | None:
    """``(p, m)`` with ``n = p**m`` (p prime, m >= 1), or None.

    >>> prime_power(9), prime_power(12)
    ((3, 2), None)
    """
    if n < 2:
        return None
    f = _factor(n)
    if len(f) != 1:
        return None
    ((p, m),) = f.items()
    return p, m


def sum_of_two_squares(n: int) -> tuple[int, int] | None:
    """``(a, b)`` with ``a*a + b*b == n`` and ``a <= b``, or None if there is none.

    >>> sum_of_two_squares(10), sum_of_two_squares(6)
    ((1, 3), None)
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    a = 0
    while 2 * a * a <= n:
        b = math.isqrt(n - a * a)
        if b * b == n - a * a:
            return a, b
        a += 1
    return None


def bruck_ryser_chowla(n: int) -> dict[str, Any]:
    """The Bruck-Ryser-Chowla test for a projective plane of order ``n``, with its working.

    For ``v = n^2 + n + 1`` (odd) the theorem asks that ``x^2 = n y^2 + (-1)^((v-1)/2) z^2``
    have a nontrivial integer solution; for planes this says: if ``n = 1 or 2 (mod 4)`` then
    ``n`` is a sum of two squares, i.e. every prime ``p = 3 (mod 4)`` divides ``n`` to an even
    power.  Returns a dictionary with ``excluded`` (bool) and the computation.

    >>> r = bruck_ryser_chowla(6)
    >>> r["excluded"], r["n_mod_4"], r["odd_primes_3_mod_4"]
    (True, 2, [3])
    >>> bruck_ryser_chowla(10)["excluded"]
    False
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"order n must be an int >= 2, got {n!r}")
    v = n * n + n + 1
    f = _factor(n)
    bad = sorted(p for p, e in f.items() if p % 4 == 3 and e % 2 == 1)
    applies = n % 4 in (1, 2)
    squares = sum_of_two_squares(n)
    excluded = applies and squares is None
    assert excluded == (applies and bool(bad))  # sum-of-two-squares theorem, double check
    return {
        "n": n,
        "v": v,
        "n_mod_4": n % 4,
        "sign": (-1) ** (((v - 1) // 2) % 2),
        "equation": f"x^2 = {n} y^2 {'-' if ((v - 1) // 2) % 2 else '+'} z^2",
        "factorization": {str(p): e for p, e in sorted(f.items())},
        "odd_primes_3_mod_4": bad,
        "two_squares": list(squares) if squares is not None else None,
        "applies": applies,
        "excluded": excluded,
    }


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------
def _check_order(n: object, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, got {n!r} ({type(n).__name__})")
    if n < 2 or n > MAX_ORDER:
        raise ValueError(f"{name} must be an order between 2 and {MAX_ORDER}, got {n}")
    return n


def existence(n: int, *, search_max_order: int = DEFAULT_SEARCH_MAX_ORDER,
              verify_singer: bool = True) -> ExistenceRecord:
    """Classify order ``n``: does a cyclic (n^2+n+1, n+1, 1) difference set exist?

    Parameters
    ----------
    n : int
        The order (2 <= n <= 10^6).
    search_max_order : int
        Run the exhaustive multiplier-orbit search for undecided orders up to this bound
        (larger orders stay ``"open"``, citing the published verification).
    verify_singer : bool
        Build and verify the Singer set for prime powers (evidence holds its elements).
        When False, the record says the set was not built (``computed=False``).

    Examples
    --------
    >>> r = existence(3)
    >>> r.status, len(r.evidence["elements"])
    ('exists', 4)
    >>> existence(22).reason.startswith("Bruck-Ryser-Chowla")
    True
    """
    _check_order(n)
    if isinstance(search_max_order, bool) or not isinstance(search_max_order, int):
        raise TypeError(f"search_max_order must be an int, got {search_max_order!r}")
    return _existence(n, search_max_order=search_max_order, verify_singer=verify_singer)


def _existence(n: int, *, search_max_order: int, verify_singer: bool) -> ExistenceRecord:
    v, k = n * n + n + 1, n + 1
    start = time.perf_counter()
    pp = prime_power(n)
    if pp is not None:
        p, m = pp
        reason = (f"n = {n} = {p}^{m} is a prime power: Singer's construction gives a cyclic "
                  f"({v}, {k}, 1) difference set")
        if not verify_singer:
            return ExistenceRecord(n, v, k, "exists", reason + " (not built here)", "singer",
                                   {"p": p, "m": m}, time.perf_counter() - start,
                                   computed=False)
        from cqs_design.singer import singer_difference_set

        ds = singer_difference_set(n)
        ds.verify()
        return ExistenceRecord(n, v, k, "exists", reason + " (built and verified)", "singer",
                               {"p": p, "m": m, "elements": list(ds.elements)},
                               time.perf_counter() - start)
    brc = bruck_ryser_chowla(n)
    if brc["excluded"]:
        reason = (f"Bruck-Ryser-Chowla: n = {n} = {brc['n_mod_4']} (mod 4) and n is not a sum "
                  f"of two squares (primes = 3 mod 4 to an odd power: "
                  f"{', '.join(map(str, brc['odd_primes_3_mod_4']))})")
        return ExistenceRecord(n, v, k, "impossible", reason, "bruck-ryser-chowla", brc,
                               time.perf_counter() - start)
    if n <= search_max_order:
        from cqs_design.search import search_difference_sets

        res = search_difference_sets(v, k, 1, use_multiplier_theorem=True)
        st = res.stats
        if not st.complete:  # pragma: no cover - no limit/time limit given
            raise RuntimeError(f"multiplier search for order {n} did not complete")
        evidence = st.to_dict()
        evidence["brc"] = brc
        if res.sets:  # would refute the prime power conjecture
            evidence["elements"] = [list(s.elements) for s in res.sets]
            return ExistenceRecord(n, v, k, "exists", "found by exhaustive search",
                                   "exhaustive-multiplier-search", evidence, st.seconds)
        primes = ", ".join(map(str, st.multipliers))
        reason = (f"exhaustive search: every prime divisor of n ({primes})"
                  f" is a multiplier (Hall), so some translate is a union of orbits of sizes "
                  f"{sorted(st.orbit_sizes)}; none of the unions of size {k} is a difference set "
                  f"({st.nodes} nodes, {st.seconds:.3f} s)")
        return ExistenceRecord(n, v, k, "impossible", reason, "exhaustive-multiplier-search",
                               evidence, st.seconds)
    published = (f"no such set for non-prime-power n <= 2*10^9 per {PUBLISHED_VERIFICATION}"
                 if n <= PUBLISHED_BOUND else None)
    return ExistenceRecord(
        n, v, k, "open",
        f"not decided by this code (BRC does not apply; no search run for n > "
        f"{search_max_order}); the published computer verification excludes it",
        "none", {"brc": brc}, time.perf_counter() - start, computed=False, published=published)


def existence_table(max_order: int, *, search_max_order: int = DEFAULT_SEARCH_MAX_ORDER,
                    verify_singer: bool | int = True, progress: bool = False
                    ) -> list[ExistenceRecord]:
    """Records for every order ``2 <= n <= max_order``.

    ``verify_singer``: True builds and verifies every Singer set, False none, an int builds
    them for orders up to that bound (the rest are marked ``computed=False``).

    >>> [r.status for r in existence_table(7)]
    ['exists', 'exists', 'exists', 'exists', 'impossible', 'exists']
    """
    _check_order(max_order, "max_order")
    orders: Sequence[int] = range(2, max_order + 1)
    if progress:
        from tqdm.auto import tqdm

        orders = tqdm(orders, desc="existence table")
    out = []
    for n in orders:
        verify = verify_singer if isinstance(verify_singer, bool) else n <= verify_singer
        out.append(_existence(n, search_max_order=search_max_order, verify_singer=verify))
    return out


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------
_COLUMNS = ("order", "v", "k", "status", "method", "seconds", "computed", "reason")


def format_table(records: Sequence[ExistenceRecord],
                 fmt: Literal["md", "csv", "json"] = "md") -> str:
    """Render records as a markdown table, CSV, or JSON (full evidence only in JSON).

    >>> print(format_table(existence_table(3), "csv").splitlines()[0])
    order,v,k,status,method,seconds,computed,reason
    >>> format_table(existence_table(3), "md").splitlines()[2][:24]
    '| 2 | 7 | 3 | exists | s'
    """
    if fmt == "json":
        return json.dumps([r.to_dict() for r in records], indent=2)
    rows = [[r.order, r.v, r.k, r.status, r.method, f"{r.seconds:.4f}",
             "yes" if r.computed else "no", r.reason] for r in records]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(_COLUMNS)
        w.writerows(rows)
        return buf.getvalue()
    if fmt == "md":
        lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |"
                  for row in rows]
        return "\n".join(lines) + "\n"
    raise ValueError(f"fmt must be 'md', 'csv' or 'json', got {fmt!r}")
