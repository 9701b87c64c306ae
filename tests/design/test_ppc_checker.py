"""The checker accepts the certificates the criteria produce and rejects tampered ones of each
kind; it never runs the criteria."""

from __future__ import annotations

import ast
import copy
import inspect
from typing import Any

import pytest

from cqs_design.ppc import (
    TESTS,
    Certificate,
    CertificateError,
    baer_criterion,
    brc_criterion,
    check_certificate,
    cover_criterion,
    decide,
    hall_criterion,
    is_valid_certificate,
    mann_criterion,
    orbit_criterion,
    subplane_criterion,
)
from cqs_design.ppc import checker as checker_module

VALID: dict[str, dict[str, Any]] = {
    "brc": brc_criterion(42).to_dict(),
    "mann": mann_criterion(10).to_dict(),
    "mann-jacobi": mann_criterion(2_000_000_001).to_dict(),  # (3 / v) = -1
    "baer": baer_criterion(144).to_dict(),
    "orbit": orbit_criterion(56).to_dict(),  # v = 31 * 103, w = 31
    "cover": cover_criterion(674).to_dict(),
    "subplane": subplane_criterion(18842).to_dict(),
    # 2^42 fixes 43 = 6^2 + 6 + 1 points of Z_v, v = 92^2 + 93: a cyclic plane of order 6
    "subplane-sub": subplane_criterion(92, max_group=0).to_dict(),
    "hall": hall_criterion(45151).to_dict(),
}


def test_the_checker_does_not_import_the_criteria() -> None:
    tree = ast.parse(inspect.getsource(checker_module))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names}
    assert imported <= {"__future__", "math", "collections.abc", "typing",
                        "cqs_design.ppc.certificate"}


@pytest.mark.parametrize("name", list(VALID))
def test_accepts_valid_certificates(name: str) -> None:
    check_certificate(VALID[name])
    assert is_valid_certificate(VALID[name])
    assert is_valid_certificate(Certificate.from_dict(VALID[name]))


def test_accepts_every_certificate_up_to_3000() -> None:
    seen = set()
    for n in range(2, 3001):
        v = decide(n)
        if v.certificate is not None:
            check_certificate(v.certificate)
            seen.add(v.certificate.test)
    assert seen >= {"brc", "mann", "baer", "orbit", "cover"}


def _set(d: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(d)
    target: Any = out
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


_DELETE = object()
_CASES: list[tuple[str, str, tuple[Any, ...], Any]] = [
    # (certificate, what, path, new value)
    ("brc", "another order", ("n",), 46 * 9),
    ("brc", "a prime = 1 mod 4", ("q",), 5),
    ("brc", "an even exponent", ("e",), 2),
    ("brc", "a wrong exponent", ("e",), 3),
    ("brc", "n = 0 mod 4", ("n",), 84),
    ("brc", "a composite q", ("q",), 21),
    ("mann", "another exponent", ("j",), 2),
    ("mann", "w not dividing v", ("w",), 7),
    ("mann", "p not dividing n", ("p",), 3),
    ("mann", "a square order", ("n",), 36),
    ("mann", "a composite w", ("w",), 111),
    ("mann", "zero exponent", ("j",), 0),
    ("mann-jacobi", "w = 3 does not divide v", ("w",), 3),
    ("mann-jacobi", "w not dividing v", ("w",), 4000000006000000005),
    ("mann-jacobi", "an even w", ("w",), 2),
    ("mann-jacobi", "jacobi = +1 claimed", ("jacobi",), 1),
    ("baer", "m^2 != n", ("m",), 13),
    ("baer", "the sub-certificate of another order", ("sub", "n"), 13),
    ("baer", "a tampered sub-certificate", ("sub", "j"), 999),
    ("baer", "no sub-certificate", ("sub",), _DELETE),
    ("orbit", "another prime of v", ("w",), 103),
    ("orbit", "a prime not dividing v", ("w",), 37),
    ("orbit", "a prime not dividing n", ("primes",), [5]),
    ("orbit", "no primes", ("primes",), []),
    ("cover", "a factorization of another number", ("factors", 0), [7, 2]),
    ("cover", "a missing factor", ("factors",), [[7, 1], [103, 1]]),
    ("cover", "an order claim too strong", ("orders", 0, 3), 2),
    ("cover", "an order claim for another prime", ("orders", 0, 2), 5),
    ("cover", "fewer order claims", ("orders",), []),
    ("cover", "a claim modulo a non-divisor", ("orders", 0, 0), 11),
    ("subplane", "another exponent", ("t", 0, 1), 1),
    ("subplane", "the identity", ("t",), []),
    ("subplane", "a prime not dividing n", ("t", 0, 0), 3),
    ("subplane-sub", "no sub-certificate", ("sub",), _DELETE),
    ("hall", "a broken collision", ("t", 0, 0, 1), 1),
    ("hall", "three multipliers", ("t",), [[], [], []]),
    ("hall", "a trivial collision", ("t",), [[], [], [], []]),
    ("hall", "a negative exponent", ("t", 1, 0, 1), -1),
]


@pytest.mark.parametrize(("name", "what", "path", "value"), _CASES,
                         ids=[f"{c[0]}: {c[1]}" for c in _CASES])
def test_rejects_tampered_certificates(name: str, what: str, path: tuple[Any, ...],
                                       value: Any) -> None:
    bad = _set(VALID[name], path, value)
    assert not is_valid_certificate(bad), what
    with pytest.raises(CertificateError):
        check_certificate(bad)


def test_every_test_has_tamper_cases() -> None:
    assert {c[0].split("-")[0] for c in _CASES} == set(TESTS)


@pytest.mark.parametrize("bad", [
    {"n": 10, "p": 2, "w": 3, "j": 1},  # no test
    {"test": "mann", "p": 2, "w": 3, "j": 1},  # no n
    {"test": "magic", "n": 10},
    {"test": "mann", "n": True, "p": 2, "w": 3, "j": 1},
    {"test": "mann", "n": 10, "p": 2.0, "w": 3, "j": 1},
    {"test": "mann", "n": 10, "p": True, "w": 3, "j": 1},
    {"test": "mann", "n": 10, "p": 2, "w": 3},
    {"test": "brc", "n": 9, "q": 3, "e": 1},  # a prime power: Singer
    {"test": "cover", "n": 674, "factors": "7*103*631", "orders": []},
    "not a mapping",
])
def test_rejects_malformed_records(bad: Any) -> None:
    with pytest.raises(CertificateError):
        check_certificate(bad)


def test_refuses_any_certificate_for_a_prime_power() -> None:
    # a certificate whose numbers pass every other check but whose order is a prime power
    for q in (4, 8, 9, 16, 25, 27, 49):
        for name in TESTS:
            assert not is_valid_certificate({**VALID[name], "n": q})


def test_error_names_the_failed_check() -> None:
    with pytest.raises(CertificateError, match=r"mann \(n = 10\): 2\^2 = 1 \(mod 3\), not -1"):
        check_certificate({**VALID["mann"], "j": 2})
    with pytest.raises(CertificateError, match="unknown test 'magic'"):
        check_certificate({"test": "magic", "n": 10})
