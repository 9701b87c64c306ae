"""Prove that Z_v has no 11-element difference cover for 101 <= v <= 110 (one-off tool).

Compiles ``scripts/quorum_lower_bound.c`` with ``gcc -O2`` into a temporary folder and runs it
once per case, one case at a time (one CPU core).  The C program's docstring explains the
search: 0 and 1 in S (translation), a3 + ak <= v + 1 (the reflection x -> 1 - x), elements
in increasing order, and the exact pruning rule "at most k(k-1)/2 - floor(v/2) pairs may
repeat a difference class".  Neither the package nor CI needs this script or a C compiler; it
writes a JSON certificate (node counts, runtimes, compiler, SHA-256 of the C source) that
``cqs_design/quorum_table.json`` and ``docs/existence.md`` cite.

Before the real cases the script checks that the search can both *find* and *refute*, against
OEIS A283297 (Banakh and Gavrylkiv, v <= 100):

* exhaustive counts of all normalized covers for 4 <= v <= 22, 3 <= k <= 7, compared with a
  brute force over every subset in Python;
* it finds an 11-element cover of Z_92 (A283297(92) = 11) and a 10-element cover of Z_91;
* it refutes 10-element covers of Z_80 .. Z_90 and Z_92 (A283297 = 11 there) and an
  11-element cover of Z_100 (A283297(100) = 12; same slack, 5, as the hardest case v = 101);
* it refutes (v, k) = (20, 5), (30, 6), (43, 7), (56, 8), (72, 9) (A283297 = k + 1); the
  tests (tests/design/test_quorum.py) re-run these in pure Python and compare node counts.

Every cover it reports is re-checked in Python.  Regenerate (about 9 minutes on one core; the
node counts are deterministic, the times are not)::

    python scripts/prove_quorum_lower_bounds.py

``--only 106-110`` runs a subset of the real cases, ``--skip-validation`` the real cases only.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "scripts" / "quorum_lower_bound.c"
OUT = ROOT / "benchmarks" / "results" / "quorum_lower_bounds.json"
TARGET = range(101, 111)  # v whose minimum was only bounded by 12 from above
K = 11


def is_cover(elements: tuple[int, ...] | list[int], v: int) -> bool:
    """True when the differences of ``elements`` cover every residue mod ``v``."""
    return {(a - b) % v for a in elements for b in elements} == set(range(v))


def brute_force_count(v: int, k: int) -> int:
    """Number of covers {0, 1, a3 < ... < ak} with a3 + ak <= v + 1, by trying every subset."""
    return sum(1 for rest in itertools.combinations(range(2, v), k - 2)
               if rest[0] + rest[-1] <= v + 1 and is_cover((0, 1, *rest), v))


def run_case(binary: Path, v: int, k: int, *, all_covers: bool = False) -> dict:
    """Run the C search for (v, k); return its JSON answer plus wall-clock seconds."""
    cmd = [str(binary), str(v), str(k), *(["all"] if all_covers else [])]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    res = json.loads(proc.stdout)
    if res["found"] is not None and not is_cover(res["found"], v):
        raise AssertionError(f"C search reported a non-cover for v={v}: {res['found']}")
    res["seconds"] = round(seconds, 3)
    return res


def compile_search(folder: Path) -> tuple[Path, str]:
    """Compile the C search with gcc -O2; return the binary and the compiler's version line."""
    binary = folder / "quorum_lower_bound"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(SOURCE)],
                   check=True)
    version = subprocess.run(["gcc", "--version"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[0]
    return binary, version


def validate(binary: Path) -> dict:
    """Check the search against brute force and against OEIS A283297 (see module docstring)."""
    small = []
    for v in range(4, 23):
        for k in range(3, min(v, 7) + 1):
            res = run_case(binary, v, k, all_covers=True)
            expected = brute_force_count(v, k)
            if res["covers"] != expected:
                raise AssertionError(f"v={v} k={k}: C counts {res['covers']}, brute force "
                                     f"{expected}")
            small.append({"v": v, "k": k, "covers": expected})
    finds = []
    for v, k in ((91, 10), (92, 11)):
        res = run_case(binary, v, k)
        if res["found"] is None:
            raise AssertionError(f"no {k}-element cover of Z_{v} found; A283297 says one exists")
        finds.append(res)
        print(f"validation: found {k}-cover of Z_{v} {res['found']} ({res['seconds']} s)",
              flush=True)
    refutes = []
    tiny = ((20, 5), (30, 6), (43, 7), (56, 8), (72, 9))  # re-run in pure Python by the tests
    for v, k in [*tiny, *((v, 10) for v in (*range(80, 91), 92)), (100, 11)]:
        res = run_case(binary, v, k)
        if not res["complete"] or res["found"] is not None:
            raise AssertionError(f"found a {k}-cover of Z_{v}; A283297 says none exists")
        refutes.append(res)
        print(f"validation: no {k}-cover of Z_{v}: {res['nodes']} nodes, {res['seconds']} s",
              flush=True)
    return {
        "brute_force_counts": {
            "what": "number of covers {0, 1, a3 < ... < ak}, a3 + ak <= v + 1, found by the C "
                    "search in 'all' mode equals a Python brute force over every subset",
            "cases": small,
        },
        "finds": {"what": "A283297(v) = k: the search must find a k-element cover",
                  "cases": finds},
        "refutes": {"what": "A283297(v) = k + 1: the search must find no k-element cover",
                    "cases": refutes},
    }


def parse_only(text: str) -> list[int]:
    """Parse ``--only`` (``"101-105"`` or ``"101,108"``) into values of ``TARGET``."""
    out: set[int] = set()
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        out.update(range(int(lo), int(hi if dash else lo) + 1))
    if not out <= set(TARGET):
        raise argparse.ArgumentTypeError(f"v must be in 101..110, got {sorted(out)}")
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", type=parse_only, default=list(TARGET))
    ap.add_argument("--skip-validation", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        binary, compiler = compile_search(Path(tmp))
        checks = None if a.skip_validation else validate(binary)
        cases = []
        for v in sorted(a.only, reverse=True):  # easy ones (little slack) first
            res = run_case(binary, v, K)
            res["verdict"] = ("no 11-element cover: minimum is 12" if res["complete"]
                              and res["found"] is None else "11-element cover FOUND")
            cases.append(res)
            print(f"v={v} k={K}: {res['verdict']}; {res['nodes']} nodes, {res['seconds']} s",
                  flush=True)
    doc = {
        "description": "exhaustive proof that Z_v has no 11-element difference cover, "
                       "101 <= v <= 110",
        "generated_by": "scripts/prove_quorum_lower_bounds.py",
        "search_source": "scripts/quorum_lower_bound.c",
        "search_source_sha256": hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
        "compiler": f"gcc -O2 ({compiler})",
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "python": sys.version.split()[0], "cores_used": 1},
        "method": "backtracking over S = {0, 1, a3 < ... < a11} with a3 + a11 <= v + 1 "
                  "(translation and the reflection x -> 1 - x; no other symmetry), pruning "
                  "when more than 55 - floor(v/2) pairs repeat a difference class {d, -d}",
        "validation": checks,
        "cases": sorted(cases, key=lambda r: r["v"]),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
