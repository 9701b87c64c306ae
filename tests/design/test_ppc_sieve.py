"""The segmented sieve: number theory helpers, agreement with the per-order functions on a
random sample of 10^4 orders <= 2*10^6, and the full run to 2*10^6 (zero open; ~20 s here)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import sympy

from cqs_design.ppc import check_certificate, decide
from cqs_design.ppc.numbers import (
    cube_roots_of_unity,
    factorize,
    is_prime,
    mulmod,
    multiplicative_order,
    order_witnesses,
    powmod,
    sidon_bound,
)
from cqs_design.ppc.sieve import OUTCOMES, STORED_TESTS, _factor_block, sieve_block
from cqs_design.ppc.verification import PPCResult, check_result

CI_MAX_ORDER = 2_000_000


# --- number theory -----------------------------------------------------------------------------
def test_is_prime_and_factorize_match_sympy() -> None:
    rng = random.Random(1)
    samples = [rng.randrange(2, 10**k) for k in (3, 6, 9, 12, 15, 18) for _ in range(40)]
    samples += [2**61 - 1, (2**31 - 1) * (2**61 - 1), 3215031751, 3825123056546413051]
    for n in samples:
        assert is_prime(n) == sympy.isprime(n), n
        assert factorize(n) == sympy.factorint(n), n


def test_factorize_budget_leaves_composites_marked() -> None:
    n = (2**31 - 1) * (2**61 - 1)
    assert factorize(n, budget=0) == {-n: 1}
    with pytest.raises(ValueError, match="n must be >= 1"):
        factorize(0)


def test_sidon_bound_is_the_largest_s() -> None:
    for h in range(1, 2000):
        s = sidon_bound(h)
        assert s * (s - 1) <= h - 1 < (s + 1) * s
    for n in range(1, 200):
        assert sidon_bound(n * n + n + 1) == n + 1


def test_cube_roots_of_unity() -> None:
    for w in sympy.primerange(3, 3000):
        roots = cube_roots_of_unity(w)
        assert list(roots) == [x for x in range(w) if (x * x + x + 1) % w == 0]


def test_orders_and_witnesses() -> None:
    for w in sympy.primerange(3, 400):
        lam = factorize(w - 1)
        for a in (2, 3, 5, 7):
            if w == a:
                continue
            order = multiplicative_order(a, w, lam)
            assert order == sympy.n_order(a, w)
            claimed = math.prod(q**c for q, c in order_witnesses(a, w, w - 1, lam))
            assert claimed == order


def test_vectorised_mulmod_and_powmod() -> None:
    rng = np.random.default_rng(0)
    for bits in (20, 40, 61, 62):
        m = int(rng.integers(2 ** (bits - 1), 2**bits - 1)) | 1
        a = rng.integers(0, m, 2000, dtype=np.uint64)
        b = rng.integers(0, m, 2000, dtype=np.uint64)
        e = rng.integers(0, 2**40, 2000, dtype=np.uint64)
        assert mulmod(a, b, m).tolist() == [int(x) * int(y) % m for x, y in zip(a, b, strict=True)]
        assert powmod(a, e, m).tolist() == [pow(int(x), int(y), m)
                                            for x, y in zip(a, e, strict=True)]
    with pytest.raises(ValueError, match="moduli"):
        mulmod(np.array([1], dtype=np.uint64), 1, 2**62)


# --- the sieve ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("lo", "hi", "w_limit"), [(2, 3000, None), (1_999_000, 2_000_001, None),
                                                   (10**9, 10**9 + 300, 1000)])
def test_block_factorizations_are_exact(lo: int, hi: int, w_limit: int | None) -> None:
    from cqs_design.ppc.sieve import v_sieve_limit

    limit = w_limit or v_sieve_limit(hi)
    f = _factor_block(lo, hi, limit)
    for i, n in enumerate(range(lo, hi)):
        nf = {int(p): int(e) for p, e in zip(f.n_p[f.n_idx == i], f.n_e[f.n_idx == i],
                                              strict=True)}
        assert nf == factorize(n)
        v = n * n + n + 1
        vf = {int(w): int(e) for w, e in zip(f.v_w[f.v_idx == i], f.v_e[f.v_idx == i],
                                             strict=True)}
        assert vf == {w: e for w, e in factorize(v).items() if w <= limit}
        assert f.v_rest[i] == v // math.prod(w**e for w, e in vf.items())


def test_block_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="need 2 <= lo < hi"):
        sieve_block(1, 10)
    with pytest.raises(ValueError, match="need 2 <= lo < hi"):
        sieve_block(10, 10)


def test_small_w_limit_gives_the_same_outcomes() -> None:
    # with w_limit 100 most cofactors of v are composite and get factored one by one
    a = sieve_block(20_000, 23_000, keep_outcomes=True)
    b = sieve_block(20_000, 23_000, w_limit=100, keep_outcomes=True)
    assert a.outcomes == b.outcomes
    assert a.counts == b.counts


@pytest.fixture(scope="module")
def run_2e6() -> tuple[PPCResult, list[str]]:
    """Every order up to 2*10^6 through the sieve, with each order's outcome kept."""
    size = 250_000
    blocks = [sieve_block(lo, min(lo + size, CI_MAX_ORDER + 1), keep_outcomes=True)
              for lo in range(2, CI_MAX_ORDER + 1, size)]
    outcomes = [name for b in blocks for name in b.outcomes or []]
    return PPCResult(CI_MAX_ORDER, size, blocks), outcomes


def _prime_power_count(limit: int) -> int:
    from cqs_design.ppc.numbers import primes_up_to

    return sum(int(math.log(limit, p) + 1e-9) for p in primes_up_to(limit).tolist())


def test_run_to_2e6_leaves_no_order_open(run_2e6: tuple[PPCResult, list[str]]) -> None:
    result, outcomes = run_2e6
    t = result.totals()
    assert t["open"] == 0
    assert result.open == []
    assert sum(t.values()) == CI_MAX_ORDER - 1 == len(outcomes)
    assert t["prime-power"] == _prime_power_count(CI_MAX_ORDER) == 149_235
    assert set(t) == set(OUTCOMES)
    for c in result.certificates:
        assert c["test"] in STORED_TESTS
        check_certificate(c)


def test_sieve_agrees_with_decide_on_a_random_sample(
        run_2e6: tuple[PPCResult, list[str]]) -> None:
    _, outcomes = run_2e6
    rng = random.Random(2024)
    seen = set()
    for n in rng.sample(range(2, CI_MAX_ORDER + 1), 10_000):
        v = decide(n)
        expect = v.status if v.certificate is None else v.certificate.test
        assert outcomes[n - 2] == expect, n
        seen.add(expect)
        if v.certificate is not None:
            check_certificate(v.certificate)
    assert seen >= {"prime-power", "brc", "mann", "orbit"}


def test_result_check_and_round_trip(run_2e6: tuple[PPCResult, list[str]], tmp_path) -> None:
    result, _ = run_2e6
    path = tmp_path / "r.json"
    result.save(path)
    assert path.stat().st_size < 1_000_000
    again = PPCResult.load(path)
    assert again.totals() == result.totals()
    rep = check_result(path, sample=300)
    assert rep.ok, rep.problems
    assert rep.certificates_checked == len(result.certificates)


def test_orders_no_test_excludes_are_reported_open(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """With only BRC and Mann left, some orders stay open: they are reported with what was
    tried, counted, flagged by the CLI (exit 1) and by existence(), never called impossible."""
    from cqs_design import existence
    from cqs_design.cli import main
    from cqs_design.ppc import criteria

    monkeypatch.setattr(criteria, "CRITERIA", {k: criteria.CRITERIA[k] for k in ("brc", "mann")})
    criteria.certify.cache_clear()
    try:
        r = sieve_block(2, 400)
        assert r.counts["open"] == len(r.open) > 0
        for entry in r.open:
            assert entry["tried"] == ["brc", "mann"]
            assert decide(entry["n"]).status == "open"
        assert [o["n"] for o in r.open][:3] == [24, 36, 50]
        assert main(["ppc", "--max-order", "400", "--no-progress"]) == 1
        assert "open: 24, 36, 50" in capsys.readouterr().out
        rec = existence(674, search_max_order=0)
        assert rec.status == "open"
        assert rec.evidence["tried"] == ["brc", "mann"]
        assert "no test excludes it" in rec.reason
    finally:
        criteria.certify.cache_clear()
