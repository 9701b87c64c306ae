"""The necessary conditions of cqs_design.ppc: each excludes known orders with a certificate
the checker accepts, and none ever excludes a prime power (Singer: those planes exist)."""

from __future__ import annotations

import math

import pytest

from cqs_design.ppc import (
    CRITERIA,
    TESTS,
    Order,
    baer_criterion,
    brc_criterion,
    check_certificate,
    cover_criterion,
    decide,
    hall_criterion,
    mann_criterion,
    orbit_criterion,
    subplane_criterion,
)
from cqs_design.ppc.criteria import subplane_verdict
from cqs_design.ppc.numbers import prime_power


def _prime_powers(limit: int) -> list[int]:
    return [n for n in range(2, limit + 1) if prime_power(n) is not None]


# --- each criterion excludes known orders -----------------------------------------------------
@pytest.mark.parametrize(("crit", "orders"), [
    (brc_criterion, [6, 14, 21, 22, 30, 33, 42, 46, 54, 57]),
    # Hall (1947): no cyclic plane of order n = 0 mod 6, 10, 14 or 15 (among other orders)
    (mann_criterion, [10, 12, 15, 18, 20, 26, 35, 60, 240, 1000, 1_000_001]),
    (baer_criterion, [36, 100, 144, 196, 400, 3600, 10**6]),
    (orbit_criterion, [24, 50, 56, 91, 99, 155, 194, 2444]),
    (cover_criterion, [411, 674, 1379, 2443, 4487]),
    (subplane_criterion, [17711, 18842, 45151, 118567]),
    (hall_criterion, [18842, 17711, 45151, 118567, 172625]),
])
def test_criterion_excludes_known_orders(crit, orders: list[int]) -> None:
    for n in orders:
        cert = crit(n)
        assert cert is not None, f"{crit.__name__} does not exclude {n}"
        assert cert.n == n
        assert cert.test in TESTS
        check_certificate(cert)
        assert check_certificate(cert.to_dict()) is None  # the JSON form checks the same


def test_brc_names_the_smallest_bad_prime() -> None:
    c = brc_criterion(2 * 3 * 7)  # 42 = 2 (mod 4), 3 and 7 to odd powers
    assert (c.witness["q"], c.witness["e"]) == (3, 1)
    assert brc_criterion(9 * 2) is None  # 18 = 3^2 * 2 is a sum of two squares
    assert brc_criterion(12) is None  # 12 = 0 (mod 4): the theorem says nothing


def test_mann_needs_a_non_square_and_gives_minus_one() -> None:
    c = mann_criterion(10)
    p, w, j = c.witness["p"], c.witness["w"], c.witness["j"]
    assert 10 % p == 0
    assert (10 * 10 + 10 + 1) % w == 0
    assert pow(p, j, w) == w - 1
    assert mann_criterion(36) is None  # squares
    assert mann_criterion(144) is None


def test_baer_nests_the_certificate_of_the_root() -> None:
    c = baer_criterion(12**4)  # 20736 = 144^2, 144 = 12^2: two levels
    assert c.witness["m"] == 144
    assert c.witness["sub"]["test"] == "baer"
    assert c.witness["sub"]["sub"]["n"] == 12
    check_certificate(c)
    assert baer_criterion(49) is None
    assert baer_criterion(50) is None


def test_subplane_verdicts() -> None:
    # 43 = 6^2 + 6 + 1 points would be a cyclic plane of order 6: excluded only via order 6
    assert subplane_verdict(100, 43) == "sub"
    assert subplane_verdict(100, 57) == "possible"  # order 7, a prime power
    assert subplane_verdict(100, 111) == "sub"  # a Baer subplane of order 10 = sqrt(100)
    assert subplane_verdict(100, 151) == "impossible"  # 151 is not m^2 + m + 1
    assert subplane_verdict(29, 31) == "impossible"  # order 5: 25 + 5 > 29 (Bruck)
    assert subplane_verdict(30, 31) == "possible"  # 25 + 5 <= 30
    assert subplane_verdict(30, 3) == subplane_verdict(30, 1) == "possible"


def test_cover_certificate_lists_the_factorization_of_v() -> None:
    c = cover_criterion(674)
    assert math.prod(w**a for w, a in c.witness["factors"]) == 674**2 + 674 + 1
    for m, p, _q, cc in c.witness["orders"]:
        assert 674 % p == 0
        assert (674**2 + 675) % m == 0
        assert cc >= 1


def test_hall_collision_is_a_real_collision() -> None:
    c = hall_criterion(45151)
    v = 45151**2 + 45152
    t = [math.prod(pow(p, e, v) for p, e in m) % v for m in c.witness["t"]]
    assert (t[0] - t[1] - t[2] + t[3]) % v == 0
    assert hall_criterion(7) is None


def test_decide_runs_the_criteria_in_order() -> None:
    assert list(CRITERIA) == list(TESTS)
    v = decide(24)
    assert v.status == "excluded"
    assert v.tried == ("brc", "mann", "baer", "orbit")
    assert decide(25).status == "prime-power"
    assert decide(25).certificate is None
    assert decide(6, skip=("brc",)).certificate.test != "brc"
    with pytest.raises(ValueError, match="n must be an integer in"):
        decide(1)
    with pytest.raises(TypeError):
        decide(12.0)  # type: ignore[arg-type]


def test_every_order_up_to_evans_and_mann_is_excluded() -> None:
    # Evans and Mann (1951) verified the conjecture for cyclic planes of order n <= 1600
    for n in range(2, 1601):
        v = decide(n)
        assert v.status in ("prime-power", "excluded"), n
        assert (v.status == "prime-power") == (prime_power(n) is not None)
        if v.certificate is not None:
            check_certificate(v.certificate)


def test_agrees_with_the_exhaustive_search_for_small_orders() -> None:
    from cqs_design.search import search_difference_sets

    for n in range(2, 101):
        if prime_power(n) is not None:
            continue
        res = search_difference_sets(n * n + n + 1, n + 1, 1, use_multiplier_theorem=True)
        assert res.stats.complete  # the search finds none ...
        assert not res.sets
        assert decide(n).status == "excluded", n  # ... and the conditions exclude it


# --- never a prime power ----------------------------------------------------------------------
PRIME_POWERS = _prime_powers(100_000)


def test_prime_powers_up_to_1e5_are_listed() -> None:
    assert len(PRIME_POWERS) == 9700  # 9592 primes and 108 higher powers
    assert PRIME_POWERS[-1] == 99991


@pytest.mark.parametrize("name", list(CRITERIA))
def test_no_criterion_excludes_a_prime_power(name: str) -> None:
    crit = CRITERIA[name]
    for q in PRIME_POWERS:
        assert crit(Order(q)) is None, f"{name} excludes the prime power {q}"


@pytest.mark.parametrize("q", [2**20, 3**13, 5**8, 7**7, 999_983, 1_000_003, 2**31 - 1])
def test_no_criterion_excludes_large_prime_powers(q: int) -> None:
    o = Order(q)
    for name, crit in CRITERIA.items():
        assert crit(o) is None, f"{name} excludes the prime power {q}"


def test_ppc_never_imports_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, cqs_design, cqs_design.ppc, cqs_design.cli.ppc; "
            "cqs_design.ppc.verify(1000); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
