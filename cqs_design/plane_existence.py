"""Existence of cyclic projective planes (cyclic planar difference sets) of order n.

A cyclic planar difference set of order ``n`` has ``v = n^2 + n + 1`` and ``k = n + 1``.
:func:`existence` classifies an order and keeps the evidence:

* ``"exists"`` -- ``n`` is a prime power: Singer's construction, built and verified here up to
  :data:`~cqs_design.singer.SINGER_MAX_Q` (65536); past it the record says
  "exists (Singer, not constructed here)" and ``computed`` is False;
* ``"impossible"`` -- the Bruck-Ryser-Chowla theorem (``n = 1, 2 mod 4`` and ``n`` not a
  sum of two squares; the computation is recorded), a completed exhaustive search over unions
  of multiplier orbits run by this code (Hall's multiplier theorem; statistics recorded; by
  default for ``n <= 315``), or, for every other order, the necessary conditions of
  :mod:`cqs_design.ppc` (``method = "gordon-tests"``): the record holds the certificate,
  re-verified by :func:`cqs_design.ppc.check_certificate`, and names the test;
* ``"open"`` -- no test of this code excludes the order (none is known up to 10^12); the
  record lists the tests tried.

The computer verification of Baumert and Gordon (2004; no cyclic projective plane of
non-prime-power order ``n <= 2*10^9``, extending Gordon 1994, ``n < 2*10^6``) stays in
``published`` as a second opinion; it is never the reason for a status.
:func:`existence` never raises for a valid order ``2 <= n <= 10^12``.

>>> existence(4).status, existence(6).status, existence(10).status
('exists', 'impossible', 'impossible')
>>> existence(10).method
'exhaustive-multiplier-search'
>>> r = existence(1_000_001)
>>> r.status, r.method, r.evidence["test"]
('impossible', 'gordon-tests', 'mann')
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from cqs_design._checks import check_int

__all__ = [
    "PUBLISHED_VERIFICATION",
    "ExistenceRecord",
    "bruck_ryser_chowla",
    "existence",
    "existence_table",
    "format_table",
    "iter_existence_table",
    "iter_format_table",
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

#: Orders at most this are decided by an exhaustive multiplier-orbit search by default: every
#: non-prime-power order n <= 315 that Bruck-Ryser-Chowla leaves open is refuted by it in
#: milliseconds to about a second (v = n²+n+1 <= 99,541; the search needs v <= MAX_SEARCH_V).
DEFAULT_SEARCH_MAX_ORDER = 315

#: Default of :func:`existence_table`'s ``verify_singer``: Singer sets are built and verified
#: for prime-power orders up to this bound (past it ``computed`` is False; a table to 10^6
#: would otherwise spend hours verifying sets up to the construction limit).
DEFAULT_TABLE_VERIFY_SINGER = 1024
#: Largest ``max_order`` of a table (a table keeps or streams one record per order).
MAX_ORDER = 10**6
#: Largest order :func:`existence` decides (Miller-Rabin is a proof for ``v < 3.3*10^24``).
MAX_EXISTENCE_ORDER = 10**12

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
@functools.lru_cache(maxsize=1)
def _smallest_prime_factors(limit: int) -> np.ndarray:
    """``spf[n]``: the smallest prime factor of ``n`` for ``2 <= n <= limit`` (a sieve)."""
    spf = np.zeros(limit + 1, dtype=np.int32)
    for p in range(2, math.isqrt(limit) + 1):
        if spf[p] == 0:
            block = spf[p * p :: p]
            block[block == 0] = p
    rest = np.flatnonzero(spf == 0)
    spf[rest] = rest  # primes (and 0, 1, never read)
    return spf


@functools.lru_cache(maxsize=1)
def _two_squares(limit: int) -> np.ndarray:
    """``a[n]``: the smallest ``a`` with ``a² + b² = n``, ``a <= b``, or -1 (``n <= limit``)."""
    out = np.full(limit + 1, -1, dtype=np.int32)
    for a in range(math.isqrt(limit // 2) + 1):
        b = np.arange(a, math.isqrt(limit - a * a) + 1, dtype=np.int64)
        n = a * a + b * b
        fresh = n[out[n] < 0]
        out[fresh] = a
    return out


def _factor(n: int) -> dict[int, int]:
    out: dict[int, int] = {}
    if n <= MAX_ORDER:
        spf = _smallest_prime_factors(MAX_ORDER)
        while n > 1:
            p = int(spf[n])
            out[p] = out.get(p, 0) + 1
            n //= p
        return out
    from cqs_design.ppc.numbers import factorize

    return factorize(n)


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
    if n <= MAX_ORDER:
        a = int(_two_squares(MAX_ORDER)[n])
        return None if a < 0 else (a, math.isqrt(n - a * a))
    return _two_squares_from_factors(_factor(n))


def _two_squares_from_factors(f: dict[int, int]) -> tuple[int, int] | None:
    """A representation ``a^2 + b^2`` from the factorization, by Gaussian integers."""
    re, im = 1, 0
    for p, e in f.items():
        if p % 4 == 3:
            if e % 2:
                return None
            re, im = re * p ** (e // 2), im * p ** (e // 2)
            continue
        if p == 2:
            x, y = 1, 1
        else:  # p = x^2 + y^2 by Cornacchia: Euclid on (p, sqrt(-1) mod p) down to sqrt(p)
            c = 2
            while pow(c, (p - 1) // 2, p) != p - 1:
                c += 1
            r0, r1 = p, pow(c, (p - 1) // 4, p)
            while r1 * r1 > p:
                r0, r1 = r1, r0 % r1
            x, y = r1, math.isqrt(p - r1 * r1)
        for _ in range(e):
            re, im = re * x - im * y, re * y + im * x
    a, b = sorted((abs(re), abs(im)))
    return a, b


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
    return check_int(n, name, minimum=2, maximum=MAX_ORDER)


#: Default of :func:`existence`'s ``verify_singer``: Singer sets are built and verified up to
#: this order (q = 4096 takes about 0.2 s; q = 65536 about 20 s, which a bare call should not
#: spend in silence); larger prime powers exist by Singer's theorem, stated as such.
DEFAULT_VERIFY_SINGER = 4096


def existence(n: int, *, search_max_order: int = DEFAULT_SEARCH_MAX_ORDER,
              verify_singer: bool | int = DEFAULT_VERIFY_SINGER,
              gordon_tests: bool = True) -> ExistenceRecord:
    """Classify order ``n``: does a cyclic (n^2+n+1, n+1, 1) difference set exist?

    Parameters
    ----------
    n : int
        The order (2 <= n <= 10^12).
    search_max_order : int
        Run the exhaustive multiplier-orbit search for orders up to this bound that
        Bruck-Ryser-Chowla leaves (default 315).
    gordon_tests : bool
        Decide the orders left by BRC and the search with the necessary conditions of
        :mod:`cqs_design.ppc` (default True); with False they stay ``"open"``, citing the
        published verification.
    verify_singer : bool or int
        Build and verify the Singer set of a prime power order (evidence holds its elements):
        an int builds it for orders up to that bound (default 4096), True up to the
        construction limit ``SINGER_MAX_Q`` (q = 65536 takes about 20 s), False never.
        Otherwise the record says the set exists by Singer's theorem and was not built
        (``computed=False``).

    Examples
    --------
    >>> r = existence(3)
    >>> r.status, len(r.evidence["elements"])
    ('exists', 4)
    >>> existence(22).reason.startswith("Bruck-Ryser-Chowla")
    True
    >>> r = existence(316)
    >>> r.method, r.evidence["certificate"]
    ('gordon-tests', {'test': 'mann', 'n': 316, 'p': 2, 'w': 3, 'j': 1})
    """
    check_int(n, "n", minimum=2, maximum=MAX_EXISTENCE_ORDER)
    check_int(search_max_order, "search_max_order", minimum=0)
    if not isinstance(verify_singer, bool):
        check_int(verify_singer, "verify_singer", minimum=0)
        verify = n <= verify_singer
    else:
        verify = verify_singer
    return _existence(n, search_max_order=search_max_order, verify_singer=verify,
                      gordon_tests=bool(gordon_tests))


def _existence(n: int, *, search_max_order: int, verify_singer: bool,
               gordon_tests: bool = True) -> ExistenceRecord:
    v, k = n * n + n + 1, n + 1
    start = time.perf_counter()
    pp = prime_power(n)
    if pp is not None:
        p, m = pp
        reason = (f"n = {n} = {p}^{m} is a prime power: Singer's construction gives a cyclic "
                  f"({v}, {k}, 1) difference set")
        from cqs_design.singer import SINGER_MAX_Q, singer_difference_set

        if n > SINGER_MAX_Q:
            return ExistenceRecord(
                n, v, k, "exists", reason + f" (Singer, not constructed here: n > "
                f"SINGER_MAX_Q = {SINGER_MAX_Q}, the construction limit)", "singer",
                {"p": p, "m": m}, time.perf_counter() - start, computed=False)
        if not verify_singer:
            return ExistenceRecord(n, v, k, "exists", reason + " (by Singer's theorem; not "
                                   "built here: pass verify_singer=True to build and verify it)",
                                   "singer", {"p": p, "m": m}, time.perf_counter() - start,
                                   computed=False)

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
    from cqs_design.search import MAX_SEARCH_V, SearchParameterError, search_difference_sets

    if n <= search_max_order:
        try:
            res = search_difference_sets(v, k, 1, use_multiplier_theorem=True)
        except SearchParameterError as exc:
            if gordon_tests:
                return _gordon(n, brc, start, search_error=str(exc))
            return ExistenceRecord(
                n, v, k, "open", f"not decided by this code: the multiplier search cannot run "
                f"({exc}); the published computer verification excludes it", "none",
                {"brc": brc, "search_error": str(exc), "max_search_v": MAX_SEARCH_V},
                time.perf_counter() - start, computed=False,
                published=_published(n))
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
    if gordon_tests:
        return _gordon(n, brc, start)
    return ExistenceRecord(
        n, v, k, "open",
        f"not decided by this code (BRC does not apply; no search run for n > "
        f"{search_max_order}); the published computer verification excludes it",
        "none", {"brc": brc}, time.perf_counter() - start, computed=False,
        published=_published(n))


def _gordon(n: int, brc: dict[str, Any], start: float, **extra: Any) -> ExistenceRecord:
    """The record from the necessary conditions of :mod:`cqs_design.ppc` (BRC already ran)."""
    from cqs_design.ppc import Order, check_certificate, decide

    v, k = n * n + n + 1, n + 1
    verdict = decide(Order(n, n_factors=_factor(n)), skip=("brc",))
    evidence: dict[str, Any] = {"brc": brc, "tried": ["brc", *verdict.tried], **extra}
    if verdict.certificate is None:
        return ExistenceRecord(
            n, v, k, "open", f"not decided by this code: no test excludes it (tried "
            f"{', '.join(evidence['tried'])}); the published computer verification covers "
            f"n <= 2*10^9", "none", evidence, time.perf_counter() - start, computed=False,
            published=_published(n))
    cert = verdict.certificate
    check_certificate(cert)
    evidence.update(test=cert.test, certificate=cert.to_dict(), checked=True)
    reason = (f"necessary condition fails ({cert.describe()}); certificate re-verified by "
              f"cqs_design.ppc.check_certificate")
    return ExistenceRecord(n, v, k, "impossible", reason, "gordon-tests", evidence,
                           time.perf_counter() - start, published=_published(n))


def _published(n: int) -> str | None:
    return (f"no such set for non-prime-power n <= 2*10^9 per {PUBLISHED_VERIFICATION}"
            if n <= PUBLISHED_BOUND else None)


def iter_existence_table(max_order: int, *,
                         search_max_order: int = DEFAULT_SEARCH_MAX_ORDER,
                         verify_singer: bool | int = DEFAULT_TABLE_VERIFY_SINGER,
                         progress: bool = False,
                         gordon_tests: bool = True) -> Iterator[ExistenceRecord]:
    """The records of :func:`existence_table`, one at a time (constant memory).

    >>> [r.status for r in iter_existence_table(4)]
    ['exists', 'exists', 'exists']
    """
    _check_order(max_order, "max_order")
    check_int(search_max_order, "search_max_order", minimum=0)
    if not isinstance(verify_singer, bool):
        check_int(verify_singer, "verify_singer", minimum=0)
    return _iter_table(max_order, search_max_order, verify_singer, progress, bool(gordon_tests))


def _iter_table(max_order: int, search_max_order: int, verify_singer: bool | int,
                progress: bool, gordon_tests: bool) -> Iterator[ExistenceRecord]:
    orders: Iterable[int] = range(2, max_order + 1)
    if progress:
        from tqdm.auto import tqdm

        orders = tqdm(orders, desc="existence table")
    for n in orders:
        verify = verify_singer if isinstance(verify_singer, bool) else n <= verify_singer
        yield _existence(n, search_max_order=search_max_order, verify_singer=verify,
                         gordon_tests=gordon_tests)


def existence_table(max_order: int, *, search_max_order: int = DEFAULT_SEARCH_MAX_ORDER,
                    verify_singer: bool | int = DEFAULT_TABLE_VERIFY_SINGER,
                    progress: bool = False,
                    gordon_tests: bool = True) -> list[ExistenceRecord]:
    """Records for every order ``2 <= n <= max_order``.

    ``verify_singer``: True builds and verifies every Singer set up to the construction limit
    ``SINGER_MAX_Q``, False none, an int (default 1024) builds them for orders up to that
    bound (the rest are marked ``computed=False``; past the limit the reason says "not
    constructed here").  ``gordon_tests`` as in :func:`existence`.  Never raises for a valid
    ``max_order``.  For large tables prefer :func:`iter_existence_table` (a record holds its
    evidence; 10^6 of them take about 2 GB).

    >>> [r.status for r in existence_table(7)]
    ['exists', 'exists', 'exists', 'exists', 'impossible', 'exists']
    """
    return list(iter_existence_table(max_order, search_max_order=search_max_order,
                                     verify_singer=verify_singer, progress=progress,
                                     gordon_tests=gordon_tests))


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------
_COLUMNS = ("order", "v", "k", "status", "method", "seconds", "computed", "reason")


def iter_format_table(records: Iterable[ExistenceRecord],
                      fmt: Literal["md", "csv", "json"] = "md") -> Iterator[str]:
    """:func:`format_table` piece by piece (each piece ends with a newline), for streaming.

    >>> records = existence_table(3)
    >>> "".join(iter_format_table(records, "csv")) == format_table(records, "csv")
    True
    """
    if fmt not in ("md", "csv", "json"):
        raise ValueError(f"fmt must be 'md', 'csv' or 'json', got {fmt!r}")
    if fmt == "json":
        first = True
        for r in records:
            body = json.dumps(r.to_dict(), indent=2)
            yield ("[\n" if first else ",\n") + "  " + body.replace("\n", "\n  ")
            first = False
        yield "[]\n" if first else "\n]\n"
        return
    if fmt == "md":
        yield "| " + " | ".join(_COLUMNS) + " |\n"
        yield "|" + "---|" * len(_COLUMNS) + "\n"
    else:
        yield ",".join(_COLUMNS) + "\n"
    for r in records:
        row = [r.order, r.v, r.k, r.status, r.method, f"{r.seconds:.4f}",
               "yes" if r.computed else "no", r.reason]
        if fmt == "md":
            yield "| " + " | ".join(str(c).replace("|", "/") for c in row) + " |\n"
        else:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow(row)
            yield buf.getvalue()


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
