"""Prove the minimum cyclic quorum size (difference cover of Z_v) for every 2 <= v <= 111.

Compiles ``scripts/quorum_lower_bound.c`` with ``gcc -O2`` into a temporary folder.  For each
``v`` it starts at the counting bound ``k (k - 1) >= v - 1`` and runs the exhaustive C search
for ``k``, ``k + 1``, ... until the search finds a cover.  The minimum is then *proven here*:
every smaller size is excluded by the counting bound or by a complete search that found
nothing, and the cover the search found is re-checked in Python.  The C program's comment
explains the search: 0 and 1 in S (translation), a3 + ak <= v + 1 (the reflection
x -> 1 - x), elements in increasing order, and the exact pruning rule "at most
k(k-1)/2 - floor(v/2) pairs may repeat a difference class".  ``v`` = 2 and 3 (below the C
program's range) are settled by a Python brute force.

A case that runs past ``--case-time-limit`` seconds is recorded as ``"timed_out": true`` and
its row as *upper bound only*: the lower bound is then the smallest size not refuted.  No
published value is trusted: OEIS A283297 (Banakh and Gavrylkiv, v <= 100) is only compared
with, and the comparison is stored (it disagrees at v = 93 and 95, where 11-element covers
exist and A283297 says 12).

Before the real cases the script checks that the search counts covers correctly: for
4 <= v <= 22 and 3 <= k <= 7 the number of normalized covers found in "all" mode equals a
Python brute force over every subset.

A known cover (``--known-covers``, default the base sets of ``cqs_design/quorum_table.json``)
ends a search once every smaller size is refuted: it is re-checked here and saves running the
C search for its own size (finding a 12-element cover of Z_110 this way took over 8 minutes,
refuting 11 elements 2 s).

The output (``benchmarks/results/quorum_lower_bounds.json``) holds one entry per ``v``
(``rows``: the minimum, the cover, the sizes refuted by search) and every C run it used
(``cases``: nodes, seconds, slack, complete, machine, hash of the C source).
``scripts/gen_quorum_table.py --apply-certificate`` copies it into
``cqs_design/quorum_table.json``.

How the stored certificate was made (issue 16): the long cases ran on a 16-core machine, one
process per case, with the C source of the commit before the a3 option (same search, same
node counts; the cases record its hash); they are stored in
``benchmarks/results/quorum_lower_bounds_device_runs.json``.  The rest ran here (2-core CPU
box).  Then, here::

    python scripts/prove_quorum_lower_bounds.py --jobs 2 --cache /tmp/qcache \\
        --import-cases benchmarks/results/quorum_lower_bounds_device_runs.json

From scratch on one machine: ``nice -n 10 python scripts/prove_quorum_lower_bounds.py
--jobs 2`` (about 80 CPU-minutes; v = 94 alone takes 9 minutes of one core).  ``--only
93-100`` runs a subset and merges it into the existing output; ``--split`` runs each case as
one C process per value of a3 (for machines with many cores); ``--cache DIR`` keeps every C
answer so that an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "scripts" / "quorum_lower_bound.c"
OUT = ROOT / "benchmarks" / "results" / "quorum_lower_bounds.json"
TABLE = ROOT / "cqs_design" / "quorum_table.json"
MAX_V = 111
MACHINE = f"{platform.node()}: {platform.platform()}, {os.cpu_count()} cores"

# OEIS A283297 (smallest difference basis of Z_n), n = 1..100: compared with, never trusted.
A283297 = [
    1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 6, 5, 6, 6, 6, 6, 6, 6, 6, 7, 7,
    6, 7, 7, 7, 7, 7, 7, 8, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 8, 9, 9, 9,
    9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10, 9, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11,
    11, 11, 11, 11, 11, 11, 10, 11, 12, 12, 12, 12, 12, 12, 12, 12,
]


def is_cover(elements: tuple[int, ...] | list[int], v: int) -> bool:
    """True when the differences of ``elements`` cover every residue mod ``v``."""
    return {(a - b) % v for a in elements for b in elements} == set(range(v))


def counting_bound(v: int) -> int:
    """Smallest k with k (k - 1) >= v - 1."""
    k = 1
    while k * (k - 1) < v - 1:
        k += 1
    return k


def brute_force_count(v: int, k: int) -> int:
    """Number of covers {0, 1, a3 < ... < ak} with a3 + ak <= v + 1, by trying every subset."""
    return sum(1 for rest in itertools.combinations(range(2, v), k - 2)
               if rest[0] + rest[-1] <= v + 1 and is_cover((0, 1, *rest), v))


class Runner:
    """Runs (and caches) the compiled C search."""

    def __init__(self, binary: Path, sha: str, cache: Path | None, time_limit: float | None,
                 imported: dict[tuple[int, int], dict] | None = None):
        self.binary, self.sha, self.cache, self.time_limit = binary, sha, cache, time_limit
        self.imported = imported or {}

    def has(self, v: int, k: int) -> bool:
        """True when the search for (v, k) was imported or cached (so it costs nothing)."""
        key = self.cache / f"{self.sha[:16]}_{v}_{k}_first.json" if self.cache else None
        return (v, k) in self.imported or (key is not None and key.exists())

    def part(self, v: int, k: int, a3: tuple[int, int] | None = None, *,
             all_covers: bool = False) -> dict:
        """One C run; ``{"timed_out": True, ...}`` when it ran past the time limit."""
        args = [str(v), str(k), "all" if all_covers else "first",
                *([str(a3[0]), str(a3[1])] if a3 else [])]
        key = self.cache / f"{self.sha[:16]}_{'_'.join(args)}.json" if self.cache else None
        if a3 is None and not all_covers and (v, k) in self.imported:
            return self.imported[v, k]
        if key is not None and key.exists():
            return {"search_source_sha256": self.sha, **json.loads(key.read_text())}
        res = self._run(args, v)
        if key is not None and not res["timed_out"]:
            key.write_text(json.dumps(res) + "\n")
        return res

    def _run(self, args: list[str], v: int) -> dict:
        start = time.perf_counter()
        try:
            proc = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                                  check=True, timeout=self.time_limit)
        except subprocess.TimeoutExpired:
            return {"v": v, "k": int(args[1]), "found": None, "complete": False,
                    "timed_out": True, "seconds": round(time.perf_counter() - start, 3),
                    "machine": MACHINE, "search_source_sha256": self.sha}
        res = json.loads(proc.stdout)
        res["seconds"] = round(time.perf_counter() - start, 3)
        res["timed_out"] = False
        res["machine"] = MACHINE
        res["search_source_sha256"] = self.sha
        if res["found"] is not None and not is_cover(res["found"], v):
            raise AssertionError(f"C search reported a non-cover for v={v}: {res['found']}")
        return res

    def case(self, v: int, k: int, split: int) -> dict:
        """The search for (v, k), in one process or split by a3 over ``split`` workers."""
        if split <= 1 or k < 4:
            return self.part(v, k)
        top = (v + 1) // 2  # a3 + ak <= v + 1 and a3 < ak: a3 <= (v + 1) // 2
        with ThreadPoolExecutor(split) as pool:
            parts = list(pool.map(lambda a: self.part(v, k, (a, a)), range(2, top + 1)))
        found = next((p["found"] for p in parts if p["found"] is not None), None)
        out = {"v": v, "k": k, "classes": parts[0].get("classes"),
               "pairs": parts[0].get("pairs"), "slack": parts[0].get("slack"),
               "found": found,
               "covers": sum(p.get("covers", 0) for p in parts),
               # each part counts the root call once
               "nodes": (sum(p.get("nodes", 0) for p in parts) - (len(parts) - 1)),
               "complete": found is None and all(p["complete"] for p in parts),
               "timed_out": any(p["timed_out"] for p in parts),
               "seconds": round(sum(p["seconds"] for p in parts), 3),
               "machine": sorted({p.get("machine", "?") for p in parts}),
               "parts": len(parts)}
        return out


def settle(runner: Runner, v: int, split: int, known: list[int] | None
           ) -> tuple[dict, list[dict]]:
    """Run sizes from the counting bound up until a cover is found (or a case times out).

    ``known`` is a cover found elsewhere (the stored table's base set): once every size below
    ``len(known)`` is refuted, it is re-checked and ends the search without running the C
    search for its own size (finding a cover can take longer than refuting the size below),
    unless that search was already imported or cached.
    """
    low = counting_bound(v)
    cases = []
    cover = None
    cover_source = "found by the C search"
    k = low
    while cover is None:
        if known is not None and len(known) <= k and not runner.has(v, k):
            if not is_cover(known, v):
                raise AssertionError(f"v={v}: the known cover {known} does not cover")
            cover, cover_source = sorted(known), "stored base set, re-checked here"
            break
        if v < 4:  # below the C program's range: brute force over subsets containing 0
            found = next((c for c in itertools.combinations(range(v), k)
                          if 0 in c and is_cover(c, v)), None)
            res = {"v": v, "k": k, "found": None if found is None else list(found),
                   "complete": True, "timed_out": False, "nodes": 0, "seconds": 0.0,
                   "method": "Python brute force"}
        else:
            res = runner.case(v, k, split)
        cases.append(res)
        if res["found"] is not None:
            cover = res["found"]
        elif not res["complete"]:
            break  # timed out: k is neither refuted nor found
        else:
            k += 1
    refuted = [c["k"] for c in cases if c["complete"] and c["found"] is None]
    proven = cover is not None
    row = {
        "v": v,
        "counting_bound": low,
        "minimum_size": len(cover) if proven else None,
        "lower_bound": len(cover) if proven else k,
        "cover": cover,
        "cover_source": cover_source if proven else None,
        "status": "proven here" if proven else "upper bound only",
        "refuted_by_search": refuted,
        "nodes": sum(c.get("nodes", 0) for c in cases),
        "seconds": round(sum(c.get("seconds", 0.0) for c in cases), 3),
    }
    if v <= len(A283297):
        row["published"] = A283297[v - 1]
    return row, cases


def compile_search(folder: Path) -> tuple[Path, str]:
    """Compile the C search with gcc -O2; return the binary and the compiler's version line."""
    binary = folder / "quorum_lower_bound"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(SOURCE)],
                   check=True)
    version = subprocess.run(["gcc", "--version"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[0]
    return binary, version


def validate(runner: Runner) -> dict:
    """Counts of all normalized covers for small (v, k) against a Python brute force."""
    small = []
    for v in range(4, 23):
        for k in range(3, min(v, 7) + 1):
            res = runner.part(v, k, all_covers=True)
            expected = brute_force_count(v, k)
            if res["covers"] != expected:
                raise AssertionError(f"v={v} k={k}: C counts {res['covers']}, brute force "
                                     f"{expected}")
            small.append({"v": v, "k": k, "covers": expected})
    return {"brute_force_counts": {
        "what": "number of covers {0, 1, a3 < ... < ak}, a3 + ak <= v + 1, found by the C "
                "search in 'all' mode equals a Python brute force over every subset",
        "cases": small}}


def parse_only(text: str) -> list[int]:
    """Parse ``--only`` (``"93-100"`` or ``"93,95"``) into values of 2..MAX_V."""
    out: set[int] = set()
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        out.update(range(int(lo), int(hi if dash else lo) + 1))
    if not out <= set(range(2, MAX_V + 1)):
        raise argparse.ArgumentTypeError(f"v must be in 2..{MAX_V}, got {sorted(out)}")
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", type=parse_only, default=list(range(2, MAX_V + 1)))
    ap.add_argument("--jobs", type=int, default=1, help="C processes at a time")
    ap.add_argument("--split", action="store_true", help="one C process per a3 value")
    ap.add_argument("--case-time-limit", type=float, default=None,
                    help="seconds per C process; past it the row is 'upper bound only'")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--import-cases", type=Path, default=None,
                    help="JSON file of C runs made elsewhere (e.g. "
                    "benchmarks/results/quorum_lower_bounds_device_runs.json) to use instead "
                    "of running them here")
    ap.add_argument("--known-covers", type=Path, default=TABLE,
                    help="JSON table whose base sets end a search once the size below is "
                    "refuted (default: cqs_design/quorum_table.json; 'none' for none)")
    ap.add_argument("--skip-validation", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    started = time.perf_counter()
    sha = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    if a.cache:
        a.cache.mkdir(parents=True, exist_ok=True)
    old = json.loads(a.out.read_text()) if a.out.exists() else {}
    keep = a.only != list(range(2, MAX_V + 1)) and old.get("search_source_sha256") == sha
    rows = {r["v"]: r for r in old.get("rows", [])} if keep else {}
    cases = [c for c in old.get("cases", []) if c["v"] not in a.only] if keep else []
    imported: dict[tuple[int, int], dict] = {}
    if a.import_cases:
        doc = json.loads(a.import_cases.read_text())
        for c in doc["cases"]:
            c = {**c, "imported_from": a.import_cases.resolve().relative_to(ROOT).as_posix(),
                 "search_source_sha256": doc["search_source_sha256"],
                 "compiler": doc["compiler"]}
            if c["found"] is not None and not is_cover(c["found"], c["v"]):
                raise AssertionError(f"imported case reports a non-cover: {c}")
            imported[c["v"], c["k"]] = c
    known: dict[int, list[int]] = {}
    if str(a.known_covers) != "none" and a.known_covers.exists():
        known = {r["v"]: r["base_set"] for r in json.loads(a.known_covers.read_text())["rows"]}
    with tempfile.TemporaryDirectory() as tmp:
        binary, compiler = compile_search(Path(tmp))
        runner = Runner(binary, sha, a.cache, a.case_time_limit, imported)
        checks = (old.get("validation") if keep or a.skip_validation else validate(runner))
        # longest first: the 11-element searches at 93 <= v <= 101 (slack 9 down to 5) take
        # minutes each, everything else seconds
        order = sorted(a.only, key=lambda v: (not 93 <= v <= 101, v))

        def one(v: int) -> tuple[dict, list[dict]]:
            row, cs = settle(runner, v, a.jobs if a.split else 1, known.get(v))
            print(f"v={v}: {row['status']}, minimum {row['minimum_size']} (lower bound "
                  f"{row['lower_bound']}), {row['nodes']} nodes, {row['seconds']} s",
                  flush=True)
            return row, cs

        with ThreadPoolExecutor(1 if a.split else a.jobs) as pool:
            for row, cs in pool.map(one, order):
                rows[row["v"]] = row
                cases.extend(cs)
    disagreements = [{"v": r["v"], "published": r["published"], "proven": r["minimum_size"]}
                     for r in rows.values() if r.get("published") is not None
                     and r["minimum_size"] is not None and r["published"] != r["minimum_size"]]
    doc = {
        "description": "exhaustive search for the minimum cyclic quorum size (difference cover "
                       "of Z_v), 2 <= v <= 111: a found, re-checked cover of that size and a "
                       "complete search that found none of each smaller size above the counting "
                       "bound",
        "generated_by": "scripts/prove_quorum_lower_bounds.py",
        "search_source": "scripts/quorum_lower_bound.c",
        "search_source_sha256": sha,
        "compiler": f"gcc -O2 ({compiler})",
        "machines": {
            "this run": {"platform": platform.platform(), "processor": platform.machine(),
                         "python": sys.version.split()[0], "cores": os.cpu_count()},
            "cases_by_machine": dict(sorted(collections.Counter(
                str(c.get("machine", "?")) for c in cases).items())),
            "note": "each case records the machine, source hash and seconds of its C run; "
                    "seconds are wall-clock of one process on one core",
        },
        "method": "backtracking over S = {0, 1, a3 < ... < ak} with a3 + ak <= v + 1 "
                  "(translation and the reflection x -> 1 - x; no other symmetry), pruning "
                  "when more than k(k-1)/2 - floor(v/2) pairs repeat a difference class {d, -d}",
        "validation": checks,
        "published_comparison": {
            "source": "OEIS A283297 (T. Banakh and V. Gavrylkiv, arXiv:1702.02631), v <= 100",
            "disagreements": sorted(disagreements, key=lambda d: d["v"]),
        },
        "rows": sorted(rows.values(), key=lambda r: r["v"]),
        "cases": sorted(cases, key=lambda r: (r["v"], r["k"])),
        "case_seconds": round(sum(c.get("seconds", 0.0) for c in cases), 1),
        "this_run_seconds": round(time.perf_counter() - started, 1),
    }
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
