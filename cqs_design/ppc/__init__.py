"""The prime power conjecture for cyclic projective planes, order by order, with certificates.

A cyclic projective plane of order ``n`` is a cyclic ``(n^2 + n + 1, n + 1, 1)`` difference
set.  Singer's construction gives one for every prime power ``n``; the prime power conjecture
says there are no others.  This subpackage verifies it up to a bound the way D. M. Gordon
("The prime power conjecture is true for n < 2,000,000", Electron. J. Combin. 1 (1994) R6) and
L. D. Baumert and D. M. Gordon (2004, arXiv:math/0304502, to ``2 * 10^9``) did: every
non-prime-power order fails some necessary condition on the multipliers.

* :mod:`~cqs_design.ppc.criteria`, :mod:`~cqs_design.ppc.multipliers` -- the conditions, one
  function each, returning a :class:`Certificate` or None; :func:`decide` runs them all;
* :mod:`~cqs_design.ppc.certificate`, :mod:`~cqs_design.ppc.checker` -- the certificate
  records and the independent checker;
* :mod:`~cqs_design.ppc.sieve`, :mod:`~cqs_design.ppc.journal`,
  :mod:`~cqs_design.ppc.verification` -- the segmented, vectorised run over all orders up to
  ``N`` (:func:`verify`), resumable block by block, its compact result (:class:`PPCResult`)
  and :func:`check_result`.

>>> from cqs_design.ppc import decide, check_certificate
>>> v = decide(12)
>>> v.status, check_certificate(v.certificate)
('excluded', None)
"""

from __future__ import annotations

from cqs_design.ppc.certificate import TESTS, Certificate, CertificateError
from cqs_design.ppc.checker import check_certificate, is_valid_certificate
from cqs_design.ppc.criteria import (
    CRITERIA,
    Verdict,
    baer_criterion,
    brc_criterion,
    certify,
    decide,
    mann_criterion,
    orbit_criterion,
    subplane_criterion,
)
from cqs_design.ppc.multipliers import cover_criterion, hall_criterion
from cqs_design.ppc.order import Order, multiplier_group
from cqs_design.ppc.verification import CheckReport, PPCResult, check_result, verify

__all__ = [
    "CRITERIA",
    "TESTS",
    "Certificate",
    "CertificateError",
    "CheckReport",
    "Order",
    "PPCResult",
    "Verdict",
    "baer_criterion",
    "brc_criterion",
    "certify",
    "check_certificate",
    "check_result",
    "cover_criterion",
    "decide",
    "hall_criterion",
    "is_valid_certificate",
    "mann_criterion",
    "multiplier_group",
    "orbit_criterion",
    "subplane_criterion",
    "verify",
]
