"""cqs_design: cyclic difference sets, projective planes and CQS decomposition plans.

Pure mathematics (numpy, sympy, networkx); this package never imports torch.

>>> from cqs_design import singer_difference_set
>>> singer_difference_set(2).elements
(0, 1, 3)
"""

from __future__ import annotations

__version__ = "0.1.0"

# --- foundation (issue: cqs_design foundation) -------------------------------------------
from cqs_design.difference_sets import (
    DifferenceSet,
    NotADifferenceSetError,
    is_difference_set,
)
from cqs_design.projective import NotAProjectivePlaneError, verify_projective_plane
from cqs_design.singer import SINGER_MAX_Q, is_prime_power, singer_difference_set

__all__ = [
    "SINGER_MAX_Q",
    "DifferenceSet",
    "NotADifferenceSetError",
    "NotAProjectivePlaneError",
    "__version__",
    "is_difference_set",
    "is_prime_power",
    "singer_difference_set",
    "verify_projective_plane",
]

# --- search / existence / quorum (issue: cqs_design search) ------------------------------
# The module is `plane_existence` (not `existence`): the function `existence` re-exported here
# would otherwise shadow it, and `import cqs_design.existence as E` gave the function.
from cqs_design.plane_existence import ExistenceRecord, existence, existence_table
from cqs_design.quorum import (
    find_cyclic_quorum_sets,
    is_cyclic_quorum_set,
    minimum_quorum_size,
    minimum_size,
)
from cqs_design.search import (
    SearchInterrupted,
    SearchParameterError,
    SearchResult,
    find_difference_sets,
    search_difference_sets,
)

__all__ += [
    "ExistenceRecord",
    "SearchInterrupted",
    "SearchParameterError",
    "SearchResult",
    "existence",
    "existence_table",
    "find_cyclic_quorum_sets",
    "find_difference_sets",
    "is_cyclic_quorum_set",
    "minimum_quorum_size",
    "minimum_size",
    "search_difference_sets",
]

# --- the prime power conjecture, verified with certificates (subpackage) -----------------
from cqs_design import ppc  # noqa: E402

__all__ += ["ppc"]

# --- plans (issue: cqs_design plans) -----------------------------------------------------
from cqs_design.plans import Plan, PlanError, PlanStats, Rect, Task, make_plan  # noqa: E402

__all__ += ["Plan", "PlanError", "PlanStats", "Rect", "Task", "make_plan"]
