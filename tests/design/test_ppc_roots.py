"""The large prime divisors of v = n^2 + n + 1 (roots.py), the sieve with them (the cofactor of
v is then 1 or a prime), and a run split into shards over one journal."""

from __future__ import annotations

import random

import numpy as np
import pytest
import sympy

from cqs_design.ppc.numbers import is_prime, primes_up_to
from cqs_design.ppc.roots import (
    MAX_ROOT_PRIME,
    LargeDivisors,
    cube_root_of_unity,
    primes_1mod3,
    root_table,
)
from cqs_design.ppc.sieve import _factor_block, needs_large_divisors, sieve_block
from cqs_design.ppc.verification import verify

W = 1 << 24


@pytest.mark.parametrize(("a", "b"), [(0, 10**5), (6, 7), (7, 13), (999, 1000), (12, 12),
                                      (W - 5000, W + 20000), (10**6 + 1, 10**6 + 2)])
def test_primes_1mod3_match_the_plain_sieve(a: int, b: int) -> None:
    ps = primes_up_to(b)
    assert primes_1mod3(a, b).tolist() == ps[(ps > a) & (ps % 3 == 1)].tolist()


def test_cube_roots_solve_x2_x_1() -> None:
    ws = primes_1mod3(0, 3 * 10**4).tolist()
    rng = random.Random(7)
    ws += sorted({w for w in (sympy.nextprime(rng.randrange(2**30, 2**31 - 2000))
                              for _ in range(300)) if w % 3 == 1})
    ws.append(max(w for w in sympy.primerange(MAX_ROOT_PRIME - 2000, MAX_ROOT_PRIME + 1)
                  if w % 3 == 1))
    arr = np.array(ws, dtype=np.int64)
    r = cube_root_of_unity(arr)
    for w, x in zip(ws, r.tolist(), strict=True):
        assert (x * x + x + 1) % w == 0, w
        assert 0 < x < w - 1 - x, w


def test_root_table_grows_and_slices() -> None:
    w1, r1 = root_table(10**5, 2 * 10**5)
    w2, r2 = root_table(10**5, 3 * 10**5)
    w3, _ = root_table(10**5, 150_000)
    assert w2[: len(w1)].tolist() == w1.tolist()
    assert r2[: len(r1)].tolist() == r1.tolist()
    assert int(w3[-1]) <= 150_000 < int(w2[len(w3)])
    with pytest.raises(ValueError, match="2\\^31"):
        root_table(10**5, 1 << 31)


def test_large_divisors_near_2e9_match_trial_division() -> None:
    """Every prime w in (2^24, 2^24 + 2^21] dividing v, for 3000 orders near 2*10^9, found by
    dividing v by every prime of the range (vectorised), equals the sieved pairs."""
    lo, hi = 1_999_990_000, 1_999_993_000
    top = W + (1 << 21)
    d = LargeDivisors(lo, hi, w_min=W, w_max=top)
    ws = primes_up_to(top)
    ws = ws[ws > W]
    got: dict[int, list[int]] = {}
    for n, w in zip(d.n.tolist(), d.w.tolist(), strict=True):
        got.setdefault(n, []).append(w)
    for n in range(lo, hi):
        v = n * n + n + 1
        assert sorted(got.get(n, [])) == ws[v % ws == 0].tolist(), n
    i, w = d.block(lo + 100, lo + 200)
    assert all(((lo + 100 + int(a)) ** 2 + lo + 101 + int(a)) % int(b) == 0
               for a, b in zip(i, w, strict=True))
    with pytest.raises(ValueError, match="not inside"):
        d.block(lo - 1, lo + 5)


def test_block_factorization_with_large_divisors_is_complete() -> None:
    """Near 3*10^7 (v up to 9*10^14, above W^2): n and v factored completely, the cofactor of
    v is 1 or a prime, agreeing with sympy on 400 random orders of a block."""
    lo, hi = 30_000_000, 30_020_000
    assert needs_large_divisors(lo, hi)
    f = _factor_block(lo, hi, W, LargeDivisors(lo, hi, w_min=W))
    assert f.complete
    rng = random.Random(3)
    for i in rng.sample(range(hi - lo), 400):
        n = lo + i
        v = n * n + n + 1
        vf = {int(w): int(e) for w, e in zip(f.v_w[f.v_idx == i], f.v_e[f.v_idx == i],
                                             strict=True)}
        rest = int(f.v_rest[i])
        assert rest == 1 or is_prime(rest)
        if rest > 1:
            vf[rest] = vf.get(rest, 0) + 1
        assert vf == sympy.factorint(v), n
    with pytest.raises(ValueError, match="do not complete"):
        _factor_block(lo, hi, W, LargeDivisors(lo, hi, w_min=W, w_max=W + 1000))


def test_sieve_with_large_divisors_gives_the_same_outcomes() -> None:
    """The block sieve with the segment's large divisors agrees with the one that settles
    composite cofactors by Jacobi symbols and Pollard-Brent, order by order."""
    lo, hi = 40_000_000, 40_030_000
    a = sieve_block(lo, hi, keep_outcomes=True, large=LargeDivisors(lo, hi, w_min=W))
    b = sieve_block(lo, hi, keep_outcomes=True)
    assert a.outcomes == b.outcomes
    assert a.counts == b.counts
    assert a.counts["open"] == 0
    assert a.certificates == b.certificates


def test_shards_over_one_journal_give_the_plain_result(tmp_path) -> None:
    lo, hi, size = 30_000_000, 30_059_999, 5_000  # 12 blocks, 3 segments
    plain = verify(hi, min_order=lo, block_size=size, segment_orders=20_000)
    j = tmp_path / "j"
    s1 = verify(hi, min_order=lo, block_size=size, journal=j, shard=(1, 2),
                segment_orders=20_000)
    assert [b.lo for b in s1.blocks] == list(range(lo + 20_000, lo + 40_000, size))
    assert s1.info["shard"] == [1, 2]
    assert s1.info["blocks_left_to_other_shards"] == 8
    s0 = verify(hi, min_order=lo, block_size=size, journal=j, shard=(0, 2),
                segment_orders=20_000)
    assert len(s0.blocks) == 12  # its own 8, and shard 1's 4 already in the journal
    whole = verify(hi, min_order=lo, block_size=size, journal=j, segment_orders=20_000)
    assert whole.info["blocks_resumed"] == 12
    assert [b.counts for b in whole.blocks] == [b.counts for b in plain.blocks]
    assert whole.totals() == plain.totals()
    assert whole.totals()["open"] == 0
    with pytest.raises(ValueError, match="shard"):
        verify(hi, min_order=lo, block_size=size, shard=(2, 2))
    with pytest.raises(ValueError, match="needs a journal"):
        verify(hi, min_order=lo, block_size=size, shard=(0, 2))


def test_sieve_agrees_with_decide_across_2_24_and_near_1e8() -> None:
    """Blocks on both sides of W = 2^24 (where the large divisors start) and near 10^8:
    the sieve's outcome of 1,500 random orders equals decide(n)'s."""
    from cqs_design.ppc import decide

    rng = random.Random(5)
    for lo, hi in ((W - 6_000, W + 6_000), (10**8, 10**8 + 8_000)):
        mid = (lo + hi) // 2
        outcomes: list[str] = []
        for a, b in ((lo, mid), (mid, hi)):
            large = LargeDivisors(a, b, w_min=W) if needs_large_divisors(a, b) else None
            outcomes += sieve_block(a, b, keep_outcomes=True, large=large).outcomes or []
        assert needs_large_divisors(mid, hi)
        assert not needs_large_divisors(lo, W)
        for n in rng.sample(range(lo, hi), 750):
            v = decide(n)
            assert outcomes[n - lo] == (v.status if v.certificate is None
                                        else v.certificate.test), n
