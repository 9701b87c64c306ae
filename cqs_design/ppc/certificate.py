"""Certificates: why an order ``n`` has no cyclic projective plane, as a few integers.

A :class:`Certificate` is the name of a necessary condition (one of :data:`TESTS`), the order
``n`` and the witness numbers that show the condition fails for ``n``.  It is JSON-ready
(:meth:`Certificate.to_dict` / :meth:`Certificate.from_dict`) and is re-verified from its
numbers alone by :func:`cqs_design.ppc.checker.check_certificate`, which never runs the test
that found it.  ``docs/existence.md`` states each condition with its proof and source.

Witness fields per test (``v = n^2 + n + 1``; a *multiplier* is written as a list of
``[p, e]`` pairs, the product of ``p^e`` over prime divisors ``p`` of ``n``):

``brc``       ``q, e``: ``q = 3 (mod 4)`` prime, ``q^e || n``, ``e`` odd, ``n = 1, 2 (mod 4)``.
``mann``      ``p, w, j``: ``p | n``, ``w | v`` primes, ``p^j = -1 (mod w)``; ``n`` not a square.
              Or ``p, w, jacobi = -1``: ``w | v`` odd and the Jacobi symbol ``(p / w) = -1``.
``baer``      ``m, sub``: ``n = m^2`` and ``sub`` excludes order ``m``.
``orbit``     ``w, primes``: ``w | v`` prime; for every ``a0 <= F(v/w)``, some ``p`` in
              ``primes`` has ``p^h != 1 (mod w)``, ``h = gcd(n+1-a0, n+v/w-a0^2, w-1)``.
``subplane``  ``t`` (a multiplier), optional ``sub``: ``F = gcd(t - 1, v) >= 4`` is not
              ``m^2 + m + 1`` for an admissible subplane order ``m`` (or ``sub`` excludes m).
``cover``     ``factors, orders``: ``v = prod w^a``; ``[m, p, q, c]``: ``q^c`` divides the
              order of ``p`` modulo the prime power ``m | v``; the divisors ``delta`` of ``v``
              whose multiplier orbits can fit in a line cover fewer than ``n + 1`` points.
``hall``      ``t``: four multipliers, ``t1 - t2 = t3 - t4 (mod v)`` and
              ``F(gcd(t1-t2, v)) + F(gcd(t1-t3, v)) < n + 1``.

>>> c = Certificate("mann", 10, {"p": 5, "w": 3, "j": 1})
>>> c.to_dict()
{'test': 'mann', 'n': 10, 'p': 5, 'w': 3, 'j': 1}
>>> Certificate.from_dict(c.to_dict()) == c
True
>>> c.describe()
'mann: p = 5 divides n, w = 3 divides v = 111, 5^1 = -1 (mod 3), and n is not a square'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TESTS", "Certificate", "CertificateError"]

#: Every test name a certificate may carry, cheapest first.
TESTS = ("brc", "mann", "baer", "orbit", "cover", "subplane", "hall")


class CertificateError(ValueError):
    """A certificate that is malformed or does not prove what it claims (the message says
    which check failed)."""


def _multiplier_text(t: list[list[int]]) -> str:
    return " * ".join(f"{p}^{e}" for p, e in t) or "1"


@dataclass(frozen=True)
class Certificate:
    """Test name, order and witness numbers (see the module docstring for the fields)."""

    test: str
    n: int
    witness: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise CertificateError(f"unknown test {self.test!r}; known: {', '.join(TESTS)}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise CertificateError(f"n must be an integer >= 2, got {self.n!r}")

    def to_dict(self) -> dict[str, Any]:
        """``{"test": ..., "n": ..., **witness}``, JSON-ready."""
        return {"test": self.test, "n": self.n, **self.witness}

    def to_json(self) -> str:
        """One-line JSON text."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Certificate:
        """Inverse of :meth:`to_dict`; raises :class:`CertificateError` on a malformed record."""
        if not isinstance(data, Mapping) or "test" not in data or "n" not in data:
            raise CertificateError(f"a certificate needs 'test' and 'n', got {data!r}")
        witness = {k: v for k, v in data.items() if k not in ("test", "n")}
        return cls(data["test"], data["n"], witness)

    @property
    def sub(self) -> Certificate | None:
        """The certificate of a smaller order this one relies on (``baer``, ``subplane``)."""
        sub = self.witness.get("sub")
        return None if sub is None else Certificate.from_dict(sub)

    def describe(self) -> str:
        """One line in words: the test and its witness numbers."""
        n, w = self.n, self.witness
        v = n * n + n + 1
        if self.test == "brc":
            return (f"brc: n = {n} = {n % 4} (mod 4) and the prime {w['q']} = 3 (mod 4) divides "
                    f"n exactly {w['e']} times (odd), so n is not a sum of two squares")
        if self.test == "mann" and "jacobi" in w:
            return (f"mann: p = {w['p']} divides n, w = {w['w']} divides v, the Jacobi symbol "
                    f"({w['p']} / {w['w']}) = -1, and n is not a square")
        if self.test == "mann":
            return (f"mann: p = {w['p']} divides n, w = {w['w']} divides v = {v}, "
                    f"{w['p']}^{w['j']} = -1 (mod {w['w']}), and n is not a square")
        if self.test == "baer":
            return f"baer: n = {w['m']}^2 and order {w['m']} is excluded ({w['sub']['test']})"
        if self.test == "orbit":
            return (f"orbit: w = {w['w']} divides v; no count a0 <= F(v/w) of points of a line "
                    f"in the subgroup of index w fits the multiplier orbits modulo w")
        if self.test == "subplane":
            return (f"subplane: the multiplier {_multiplier_text(w['t'])} would fix a "
                    f"configuration that is no admissible subplane")
        if self.test == "cover":
            return (f"cover: v = {' * '.join(f'{p}^{a}' for p, a in w['factors'])}; multiplier "
                    f"orbits leave room for fewer than n + 1 = {n + 1} points of a line")
        return ("hall: multipliers " + ", ".join(_multiplier_text(t) for t in w["t"])
                + " satisfy t1 - t2 = t3 - t4 (mod v), confining a line to two small subgroups")
