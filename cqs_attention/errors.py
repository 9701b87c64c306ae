"""The exceptions :mod:`cqs_attention` raises.

Every error is raised *before* any work starts and names the offending argument and what
would have been valid.

>>> from cqs_attention.errors import AttentionInputError
>>> issubclass(AttentionInputError, ValueError)
True
"""

from __future__ import annotations

__all__ = [
    "AttentionInputError",
    "KernelUnavailableError",
    "MaskError",
    "MemoryBudgetError",
    "PlanMismatchError",
    "RankFailureError",
]


class AttentionInputError(ValueError):
    """q, k, v, out, scale, device or another argument has a wrong shape, dtype or device."""


class MaskError(ValueError):
    """A mask argument (``window``, ``document_ids``, ``mask_mod``) is invalid."""


class PlanMismatchError(ValueError):
    """The ``plan`` given does not fit the inputs (other length, or a weaker mask)."""


class MemoryBudgetError(ValueError):
    """``memory_budget`` is too small for any plan (or invalid). ``minimum`` is the smallest
    budget that runs the call (its backward included when gradients are needed), when known.
    """

    def __init__(self, message: str, minimum: int | None = None) -> None:
        super().__init__(message)
        self.minimum = minimum


class KernelUnavailableError(RuntimeError):
    """No registered kernel (or not the one forced by ``backend=``) can run a call.

    The message lists every kernel's reasons.
    """


class RankFailureError(RuntimeError):
    """A collective of a distributed run failed: another rank of the process group died,
    was killed or timed out (the message names this rank and the collective)."""
