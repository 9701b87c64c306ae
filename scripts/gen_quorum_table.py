"""Write ``cqs_design/quorum_table.json``: minimum cyclic quorum sets for 2 <= v <= 111.

For each ``v`` the script

1. finds a base set of the smallest size it can reach, by a seeded random local search
   (``--seed``, default 0) or, when that fails, by the exhaustive search of
   :mod:`cqs_design.quorum`.  Rows with no published value (v > 100) also get ``--restarts``
   restarts per size of a stronger min-conflicts search (:func:`min_conflicts_search`); rows
   with a published value use only the original search, so they do not change.  Every stored
   base set is checked to cover;
2. tries to *prove* minimality: an exhaustive search (``cqs_design.quorum``) of the next smaller
   size must finish with no cover (per-size ``--time-limit`` seconds).  For a size ``k`` with
   ``k (k - 1) = v - 1`` a cover is a planar difference set, so the planar search
   (with Hall's multiplier theorem when it applies) is used instead.  The counting bound
   ``k (k - 1) >= v - 1`` proves minimality outright when it is tight;
3. records the published value (OEIS A283297, Banakh and Gavrylkiv, "Difference bases in cyclic
   and dihedral groups", arXiv:1702.02631, computed for v <= 100) to compare with.  It is
   never used as a proof: it is wrong at v = 93 and 95 (11-element covers exist, it says 12).

Since issue 16 every row's minimum comes from the certificate of
``scripts/prove_quorum_lower_bounds.py`` (an exhaustive C search of every size between the
counting bound and the minimum, for every v <= 111), copied in by ``--apply-certificate``
(below).  A row the certificate does not prove is marked ``"upper bound only"``.

Regenerate in two steps (deterministic for a given seed and time limit, up to which proofs
finish in time).  The full table (the ``"arguments"`` key of the JSON records the run)::

    python scripts/gen_quorum_table.py --seed 0 --time-limit 15 --jobs 16

then the rows without a published value, with the stronger search and a short proof time
limit (the Python proofs of size 11 do not finish; the certificate below supplies them for
v = 101..110; about 5 minutes on 2 cores;
logged under ``"reruns"`` in the JSON; the other rows are kept as they are)::

    python scripts/gen_quorum_table.py --seed 0 --time-limit 3 --jobs 2 --only 101-111

Rows whose proof ran out of time are marked ``"minimum_proven_here": false`` and their
``minimum_size`` is the published value (checked against the stored base set size) or, for
v > 100, only an upper bound (status ``"upper bound only"``).

Exhaustive proofs too long for this script come from a certificate: when the Python search of
size ``k - 1`` does not finish, a complete, empty case ``(v, k - 1)`` of
``benchmarks/results/quorum_lower_bounds.json`` (written by
``scripts/prove_quorum_lower_bounds.py``, a one-off C search; it proves that no 11-element cover
of Z_v exists for 101 <= v <= 110) counts as the proof.  To apply that certificate to the stored
table without recomputing anything (this is how rows 101..110 became ``"proven here"``)::

    python scripts/gen_quorum_table.py --apply-certificate
"""

from __future__ import annotations

import argparse
import json
import random
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from cqs_design.quorum import (
    is_cyclic_quorum_set,
    minimum_size_lower_bound,
    search_cyclic_quorum_sets,
)
from cqs_design.search import multiplier_primes, search_difference_sets

MAX_V = 111
RESTARTS = 40  # min-conflicts restarts per size (rows without a published value only)
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "cqs_design" / "quorum_table.json"
CERTIFICATE = ROOT / "benchmarks" / "results" / "quorum_lower_bounds.json"
CERTIFICATE_NAME = "benchmarks/results/quorum_lower_bounds.json"

# OEIS A283297 (smallest difference basis of Z_n), n = 1..100, Banakh & Gavrylkiv (2017).
A283297 = [
    1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 6, 5, 6, 6, 6, 6, 6, 6, 6, 7, 7,
    6, 7, 7, 7, 7, 7, 7, 8, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 8, 9, 9, 9,
    9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10, 9, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11,
    11, 11, 11, 11, 11, 11, 10, 11, 12, 12, 12, 12, 12, 12, 12, 12,
]
PUBLISHED_SOURCE = ("OEIS A283297 (T. Banakh and V. Gavrylkiv, Difference bases in cyclic and "
                    "dihedral groups, arXiv:1702.02631, 2017), v <= 100")


def local_search(v: int, k: int, rng: random.Random, iters: int = 200_000) -> list[int] | None:
    """Random local search for a k-element difference cover of Z_v (None if not found)."""
    counts = [0] * v
    elems = [0, *rng.sample(range(1, v), k - 1)]
    for a in elems:
        for b in elems:
            if a != b:
                counts[(a - b) % v] += 1
    uncovered = sum(1 for c in counts[1:] if c == 0)
    for _ in range(iters):
        if uncovered == 0:
            return sorted(elems)
        i = rng.randrange(1, k)
        old = elems[i]
        new = rng.randrange(1, v)
        if new in elems:
            continue
        others = [e for j, e in enumerate(elems) if j != i]
        delta = 0
        for d in others:
            for e in ((old - d) % v, (d - old) % v):
                counts[e] -= 1
                if counts[e] == 0:
                    delta += 1
        for d in others:
            for e in ((new - d) % v, (d - new) % v):
                if counts[e] == 0:
                    delta -= 1
                counts[e] += 1
        if delta <= 0 or rng.random() < 0.02:
            elems[i] = new
            uncovered += delta
        else:  # undo
            for d in others:
                for e in ((new - d) % v, (d - new) % v):
                    counts[e] -= 1
            for d in others:
                for e in ((old - d) % v, (d - old) % v):
                    counts[e] += 1
    return None


def min_conflicts_search(v: int, k: int, rng: random.Random, iters: int = 20_000,
                         noise: float = 0.05) -> list[int] | None:
    """Min-conflicts local search for a k-element difference cover of Z_v (None if not found).

    Each step takes one element out at random (0 stays) and puts back the residue that covers
    the most still-uncovered differences (ties broken at random); with probability ``noise`` it
    puts back a random residue instead, to leave local minima.  Much stronger than
    :func:`local_search` for v > 100 (it finds 12-element covers of Z_106 .. Z_111 within
    seconds), but used only for rows without a published value so that the rows v <= 100
    stay exactly as the original generator wrote them.
    """
    xs = np.arange(v)
    elems = [0, *rng.sample(range(1, v), k - 1)]
    counts = np.zeros(v, dtype=np.int64)
    for a in elems:
        for b in elems:
            if a != b:
                counts[(a - b) % v] += 1
    for _ in range(iters):
        if not (counts[1:] == 0).any():
            return sorted(elems)
        i = rng.randrange(1, k)
        old = elems[i]
        others = np.array([e for j, e in enumerate(elems) if j != i], dtype=np.int64)
        np.subtract.at(counts, (old - others) % v, 1)
        np.subtract.at(counts, (others - old) % v, 1)
        uncovered = counts == 0
        uncovered[0] = False
        diffs = np.concatenate([(xs[:, None] - others[None, :]) % v,
                                (others[None, :] - xs[:, None]) % v], axis=1)
        gain = uncovered[diffs].sum(axis=1)
        gain[others] = -1
        if rng.random() < noise:
            free = np.flatnonzero(gain >= 0)
            free = free[free != 0]
        else:
            free = np.flatnonzero(gain == gain.max())
        new = int(free[rng.randrange(len(free))])
        elems[i] = new
        np.add.at(counts, (new - others) % v, 1)
        np.add.at(counts, (others - new) % v, 1)
    return None


def no_cover_of_size(v: int, k: int, time_limit: float) -> dict | None:
    """Exhaustive proof that no k-element cover exists; None if it did not finish."""
    if k < 2 or k * (k - 1) < v - 1:
        return {"method": "counting bound k(k-1) >= v-1", "nodes": 0, "seconds": 0.0}
    if k * (k - 1) == v - 1:
        mult = bool(multiplier_primes(v, k)) and v % k != 0
        res = search_difference_sets(v, k, 1, use_multiplier_theorem=mult, time_limit=time_limit)
        if res.stats.complete and not res.sets:
            return {"method": "a tight cover is a planar difference set; exhaustive "
                              + res.stats.method + " search found none",
                    "nodes": res.stats.nodes, "seconds": round(res.stats.seconds, 3)}
        return None
    sets, st = search_cyclic_quorum_sets(v, k, limit=1, time_limit=time_limit)
    if st.complete and not sets:
        return {"method": "exhaustive search (cqs_design.quorum)", "nodes": st.nodes,
                "seconds": round(st.seconds, 3)}
    return certified_no_cover(v, k)


def certified_no_cover(v: int, k: int) -> dict | None:
    """Proof that Z_v has no k-element cover, read from ``CERTIFICATE`` (None if not there).

    Only a case that searched its whole space (``complete``) and found nothing counts.
    """
    if not CERTIFICATE.exists():
        return None
    doc = json.loads(CERTIFICATE.read_text())
    for case in doc["cases"]:
        if case["v"] == v and case["k"] == k and case["complete"] and case["found"] is None:
            return {"method": f"exhaustive search of all {k}-element sets found no cover (C "
                              f"program {doc['search_source']}, run by {doc['generated_by']}; "
                              f"certificate {CERTIFICATE_NAME})",
                    "nodes": case["nodes"], "seconds": case["seconds"]}
    return None


def certificate_proof(cert_row: dict, cases: list[dict]) -> dict:
    """The ``proof`` entry of a table row proven by the certificate's row.

    ``nodes`` and ``seconds`` are those of the refuting searches (0 for the counting bound).
    """
    refuted = cert_row["refuted_by_search"]
    runs = [c for c in cases if c["v"] == cert_row["v"] and c["k"] in refuted]
    low = cert_row["counting_bound"]
    if refuted:
        sizes = ", ".join(str(k) for k in refuted)
        method = (f"exhaustive search found no cover of size {sizes} (C program "
                  f"scripts/quorum_lower_bound.c; certificate {CERTIFICATE_NAME})"
                  + ("; smaller sizes by the counting bound k(k-1) >= v-1" if low > 2 else ""))
    else:
        method = "counting bound k(k-1) >= v-1"
    return {"method": method, "nodes": sum(c["nodes"] for c in runs),
            "seconds": round(sum(c["seconds"] for c in runs), 3),
            "refuted_sizes": refuted, "counting_bound": low,
            "cover": cert_row["cover_source"]}


def source_text(proof: dict | None, published: int | None) -> str:
    """The ``source`` sentence of a row (a published value is never used as a proof)."""
    if proof is not None:
        return ("computed here (base set verified to cover; minimality by "
                + proof["method"] + ")")
    return ("base set computed here; minimality NOT proven (upper bound only"
            + (f"; OEIS A283297 says {published}, not used" if published else "") + ")")


def status_text(proven: bool, published: int | None) -> str:
    """The ``status`` of a row: ``"proven here"`` or ``"upper bound only"``."""
    del published  # a published value alone never makes a row proven
    return "proven here" if proven else "upper bound only"


def row(args: tuple[int, int, float, int]) -> dict:
    v, seed, time_limit, restarts = args
    rng = random.Random(seed * 1_000_003 + v)
    start = time.perf_counter()
    published = A283297[v - 1] if v <= len(A283297) else None
    k = minimum_size_lower_bound(v)
    base = None
    while base is None:
        base = None if k < v else list(range(v))
        for _ in range(20 if published is not None and k >= published else 3):
            base = base or local_search(v, k, rng)
        if published is None:  # no published value to stop at: try much harder
            for _ in range(restarts):
                base = base or min_conflicts_search(v, k, rng)
        if base is None:
            sets, _ = search_cyclic_quorum_sets(v, k, limit=1, time_limit=time_limit)
            base = list(sets[0]) if sets else None
        if base is None:
            k += 1
    assert is_cyclic_quorum_set(base, v)
    assert len(base) == k
    proof = no_cover_of_size(v, k - 1, time_limit)
    proven = proof is not None
    if published is not None and published != k:
        print(f"v={v}: size {k} (proven: {proven}) but OEIS A283297 says {published}")
    return {
        "v": v,
        "minimum_size": k,
        "status": status_text(proven, published),
        "base_set": base,
        "minimum_proven_here": proven,
        "proof": proof,
        "published": published,
        "source": source_text(proof, published),
        "seconds": round(time.perf_counter() - start, 3),
    }


def apply_certificate(out: Path) -> list[int]:
    """Copy the minima of ``CERTIFICATE`` into the table ``out``.

    Nothing is searched: for each row the certificate proves, ``minimum_size``, ``base_set``
    (the certificate's cover, re-checked), ``proof``, ``status``, ``minimum_proven_here`` and
    ``source`` are replaced; the published value stays as a number to compare with
    (``published_agrees``).  A row the certificate does not prove becomes "upper bound only".
    Returns the v values proven.
    """
    doc = json.loads(out.read_text())
    cert_doc = json.loads(CERTIFICATE.read_text())
    cert = {r["v"]: r for r in cert_doc["rows"]}
    done = []
    for r in doc["rows"]:
        c = cert.get(r["v"])
        published = A283297[r["v"] - 1] if r["v"] <= len(A283297) else None
        if c is not None and c["status"] == "proven here":
            if not is_cyclic_quorum_set(c["cover"], r["v"]) or len(c["cover"]) != \
                    c["minimum_size"]:
                raise AssertionError(f"v={r['v']}: certificate cover is not a cover of its size")
            proof = certificate_proof(c, cert_doc["cases"])
            r.update(minimum_size=c["minimum_size"], base_set=c["cover"],
                     minimum_proven_here=True, proof=proof, status=status_text(True, published),
                     source=source_text(proof, published))
            done.append(r["v"])
        else:
            lower = c["lower_bound"] if c is not None else minimum_size_lower_bound(r["v"])
            r.update(minimum_proven_here=False, proof=None, lower_bound=lower,
                     status=status_text(False, published), source=source_text(None, published))
        r.pop("seconds", None)  # the old generator's time; the proof has the search time
        r["published"] = published
        r["published_agrees"] = None if published is None else published == r["minimum_size"]
    doc["lower_bound_certificate"] = {"file": CERTIFICATE_NAME, "applied_to": done}
    doc["published_source"] = PUBLISHED_SOURCE + " (compared with, never used as a proof)"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--max-v", type=int, default=MAX_V)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--restarts", type=int, default=RESTARTS,
                    help="min-conflicts restarts per size for rows without a published value")
    ap.add_argument("--only", type=parse_only, default=None,
                    help="v values to (re)compute, e.g. '101-111' or '7,13,101-105'; the other "
                    "rows of the existing --out file are kept as they are")
    ap.add_argument("--apply-certificate", action="store_true",
                    help=f"only mark rows of --out proven where {CERTIFICATE_NAME} refutes "
                    "the next smaller size (no search)")
    a = ap.parse_args()
    if a.apply_certificate:
        if not a.out.exists():
            ap.error(f"--apply-certificate needs an existing table; {a.out} does not exist")
        done = apply_certificate(a.out)
        print(f"certificate applied to v = {done or 'none'}")
        return
    vs = sorted(range(2, a.max_v + 1), key=lambda v: -v)  # slow ones first
    rows: list[dict] = []
    a.base_doc = None
    if a.only:
        vs = [v for v in vs if v in a.only]
        missing = sorted(a.only - set(vs))
        if missing:
            ap.error(f"--only: v must be between 2 and --max-v = {a.max_v}, got {missing}")
        if not a.out.exists():
            ap.error(f"--only needs an existing table to merge into; {a.out} does not exist")
        a.base_doc = json.loads(a.out.read_text())
        rows = [r for r in a.base_doc["rows"] if r["v"] not in a.only]
    with Pool(a.jobs) as pool:
        jobs = [(v, a.seed, a.time_limit, a.restarts) for v in vs]
        for r in pool.imap_unordered(row, jobs, chunksize=1):
            rows.append(r)
            print(f"v={r['v']}: minimum {r['minimum_size']} proven={r['minimum_proven_here']}"
                  f" {r['seconds']} s", flush=True)
            write(a, rows)
    print(f"wrote {a.out}: {sum(r['minimum_proven_here'] for r in rows)} of {len(rows)} "
          "minima proven here")


def parse_only(text: str) -> set[int]:
    """Parse ``--only``: comma-separated values and inclusive ranges (``"7,101-111"``)."""
    out: set[int] = set()
    try:
        for part in text.split(","):
            lo, dash, hi = part.strip().partition("-")
            first, last = int(lo), int(hi if dash else lo)
            if first > last:
                raise ValueError(part)
            out.update(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected values or ranges like '101-111' or '7,13,101-105', got {text!r}"
        ) from None
    return out


def write(a: argparse.Namespace, rows: list[dict]) -> None:
    arguments = {"seed": a.seed, "time_limit": a.time_limit, "max_v": a.max_v,
                 "restarts": a.restarts}
    doc = {
        "description": "minimum cyclic quorum sets (difference covers of Z_v)",
        "generated_by": "scripts/gen_quorum_table.py",
        "arguments": arguments,
        "published_source": PUBLISHED_SOURCE,
        "rows": sorted(rows, key=lambda r: r["v"]),
    }
    certified = [r["v"] for r in rows if r["proof"] and CERTIFICATE_NAME in r["proof"]["method"]]
    if certified:
        doc["lower_bound_certificate"] = {"file": CERTIFICATE_NAME, "applied_to": certified}
    if a.base_doc is not None:  # partial rerun: keep the full run's arguments, log this one
        done = sorted(a.only)
        doc["arguments"] = a.base_doc["arguments"]
        reruns = [x for x in a.base_doc.get("reruns", []) if set(x["only"]) - set(done)]
        doc["reruns"] = [*reruns, {**arguments, "only": done}]
    a.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
