"""A lower bound on the bytes any schedule of an attention call must move between home (host)
memory and a device that holds at most ``budget`` bytes at once.

:func:`min_link_bytes` returns the bytes that must go to the device and the bytes that must
come back, each a true lower bound over every schedule of the class below; the benchmark
divides them by the measured link bandwidths to bound a streamed run's time from below.

**Model.** Inputs live at home, every arithmetic operation runs on the device, and the device
never holds more than ``budget`` bytes. Every value held or moved takes at least ``elem``
bytes (the inputs' element size: nothing narrower than the inputs' dtype), and each score
``s_ij`` is computed classically: as a sum over ``c`` of products ``f(q_ic) g(k_jc)``, whose
partial sums belong to that score alone (every attention kernel works so; Strassen-like
products are outside the class).

**Compulsory bytes.** Every element of q, k and v reaches the device at least once (each
output row depends on its query row and, with full or bottom-right causal masks and
``q_len <= kv_len``, every key and value row is used), and the output, computed on the device,
leaves it at least once. The backward needs q, k, v and ``dout`` in, and writes ``dq``,
``dk``, ``dv`` back. ``lse`` and, in the backward, ``out`` are NOT counted: a schedule may
recompute them from q, k and v (the engine reads them; counting them would make the bound
tighter but not a bound over every schedule).

**Re-reads forced by the budget** (a Hong-Kung style segment argument). Let ``m = budget /
elem`` words fit on the device. Cut the run into segments of ``X`` loaded words each. A segment
can use only the ``R <= m + X`` words on the device at its start or loaded during it. For a
score computed in a segment, walking back from it along the paths from each ``q_ic`` and
``k_jc``, the first word found in those ``R`` is either a partial sum or product of that score
(at most ``R`` scores have one), or for every ``c`` a word made from ``q_ic`` alone and one
from ``k_jc`` alone, so that both whole rows (``d`` words each) are there: with ``a + b <=
R`` such words, at most ``(a/d)(b/d) <= R^2 / (4 d^2)`` scores. So a segment computes at most
``max(R^2 / (4 d^2), R)`` scores, a run of ``P`` allowed (query, key) pairs (over batches and
heads) needs ``s >= P / max(...)`` segments, and loads ``(s - 1) X`` words at least; the bound
keeps the best of a few ``X``. Roughly ``S_h^2 / budget`` bytes per head (``S_h``: one head's
q bytes): as long as one head's rows fit the budget a few times over, the compulsory bytes are
the larger term (a schedule taking one head at a time moves nearly only those), and
``kind == "compulsory"``; below, the re-read term wins (``kind == "reuse"``).

>>> from cqs_attention.engine.placement.traffic import min_link_bytes
>>> b = min_link_bytes(batch=1, heads=16, q_len=16384, kv_len=16384, head_dim=128,
...                    elem=2, budget=48 << 20, causal=False, backward=False)
>>> b.bytes_in == 3 * 16384 * 16 * 128 * 2, b.bytes_out == 16384 * 16 * 128 * 2, b.kind
(True, True, 'compulsory')
>>> tiny = min_link_bytes(batch=1, heads=1, q_len=1 << 16, kv_len=1 << 16, head_dim=128,
...                       elem=2, budget=1 << 20, causal=False, backward=False)
>>> tiny.kind, round(tiny.bytes_in / tiny.compulsory_in, 2)  # one head, 1 MiB: 5x q+k+v
('reuse', 5.31)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LinkBound", "min_link_bytes", "reuse_load_words"]


@dataclass(frozen=True)
class LinkBound:
    """Lower bounds on the bytes a run moves each way (see the module docstring).

    Attributes
    ----------
    bytes_in, bytes_out
        Bytes that must go to the device, and come back, at least.
    compulsory_in, compulsory_out
        The inputs read once and the outputs written once.
    reuse_in
        The loads the budget forces (the segment argument), 0 when it proves nothing.
    kind
        ``"compulsory"`` or ``"reuse"``: which term gives ``bytes_in``.
    """

    bytes_in: int
    bytes_out: int
    compulsory_in: int
    compulsory_out: int
    reuse_in: int
    kind: str

    @property
    def total(self) -> int:
        return self.bytes_in + self.bytes_out


def _allowed_pairs(q_len: int, kv_len: int, causal: bool) -> int:
    """(query, key) pairs of one head: all, or bottom-right causal (``q_len <= kv_len``)."""
    if not causal:
        return q_len * kv_len
    off = kv_len - q_len
    # query i sees keys 0 .. i + off
    return q_len * (off + 1) + q_len * (q_len - 1) // 2


def reuse_load_words(pairs: int, head_dim: int, words: int) -> int:
    """The words any classical schedule loads to compute ``pairs`` scores of ``head_dim``-long
    rows on a device of ``words`` words (the segment argument of the module docstring); the
    best over segment lengths ``X = words * 2^k``, ``k = -4 .. 4``.

    >>> reuse_load_words(pairs=10**6, head_dim=10, words=10**9)  # everything fits: nothing
    0
    >>> reuse_load_words(pairs=4096**2, head_dim=64, words=4096)
    11182080
    """
    if pairs <= 0 or words <= 0:
        return 0
    best = 0
    for k in range(-4, 5):
        x = max(1, int(words * 2.0 ** k))
        r = words + x
        per_segment = max(r * r / (4.0 * head_dim * head_dim), float(r))
        segments = math.ceil(pairs / per_segment)
        best = max(best, (segments - 1) * x)
    return best


def min_link_bytes(*, batch: int, heads: int, q_len: int, kv_len: int, head_dim: int,
                   elem: int, budget: int | None, causal: bool, backward: bool,
                   kv_heads: int | None = None, v_dim: int | None = None) -> LinkBound:
    """Lower bounds on the bytes to and from the device of any schedule of one attention call
    (forward, or ``backward``) that holds at most ``budget`` bytes on the device at once
    (``None``: unbounded); the derivation and its assumptions are in the module docstring.

    ``elem`` is the inputs' element size in bytes; ``kv_heads`` (default ``heads``) and
    ``v_dim`` (default ``head_dim``) as in the call. Masks: full, or bottom-right causal with
    ``q_len <= kv_len`` (every row and key is then used).

    >>> f = min_link_bytes(batch=1, heads=2, q_len=8, kv_len=8, head_dim=4, elem=2,
    ...                    budget=None, causal=True, backward=True)
    >>> f.bytes_in, f.bytes_out, f.kind  # q, k, v, dout in; dq, dk, dv out
    (512, 384, 'compulsory')
    """
    for name, value in (("batch", batch), ("heads", heads), ("q_len", q_len),
                        ("kv_len", kv_len), ("head_dim", head_dim), ("elem", elem)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if budget is not None and budget < 1:
        raise ValueError(f"budget must be None or a positive number of bytes, got {budget!r}")
    if causal and q_len > kv_len:
        raise ValueError(f"causal needs q_len <= kv_len (rows without keys are not modelled), "
                         f"got q_len={q_len}, kv_len={kv_len}")
    hk = heads if kv_heads is None else kv_heads
    dv = head_dim if v_dim is None else v_dim
    q_rows, kv_rows = batch * heads * q_len, batch * hk * kv_len
    q_bytes, k_bytes, v_bytes = (q_rows * head_dim * elem, kv_rows * head_dim * elem,
                                 kv_rows * dv * elem)
    o_bytes = q_rows * dv * elem
    if backward:
        comp_in = q_bytes + k_bytes + v_bytes + o_bytes  # q, k, v, dout
        comp_out = q_bytes + k_bytes + v_bytes  # dq, dk, dv
    else:
        comp_in = q_bytes + k_bytes + v_bytes
        comp_out = o_bytes
    reuse = 0
    if budget is not None:
        pairs = batch * heads * _allowed_pairs(q_len, kv_len, causal)
        reuse = reuse_load_words(pairs, head_dim, budget // elem) * elem
    kind = "reuse" if reuse > comp_in else "compulsory"
    return LinkBound(bytes_in=max(comp_in, reuse), bytes_out=comp_out, compulsory_in=comp_in,
                     compulsory_out=comp_out, reuse_in=reuse, kind=kind)
