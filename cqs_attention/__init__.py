"""cqs_attention: exact, memory-adaptive streamed attention driven by cqs_design plans.

>>> import torch, cqs_attention
>>> q = torch.randn(1, 2, 40, 8)
>>> out = cqs_attention.attention(q, q, q, causal=True)
>>> out.shape
torch.Size([1, 2, 40, 8])

The public names are imported on first use (PEP 562 ``__getattr__``): ``import cqs_attention``
loads neither torch nor ``torch._dynamo`` (which :class:`CQSAttention` pulls in for
``torch.compiler.disable``), so ``cqs-attention --help`` and scripts that need one function stay
fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    # attention core
    "attention": "cqs_attention.api",
    "AttentionInputError": "cqs_attention.errors",
    "KernelUnavailableError": "cqs_attention.errors",
    "MaskError": "cqs_attention.errors",
    "MemoryBudgetError": "cqs_attention.errors",
    "PlanMismatchError": "cqs_attention.errors",
    "RankFailureError": "cqs_attention.errors",
    "available_kernels": "cqs_attention.kernels",
    "register_kernel": "cqs_attention.kernels",
    "select_kernel": "cqs_attention.kernels",
    "merge_partials": "cqs_attention.merge",
    "reference_attention": "cqs_attention.reference",
    "RunReport": "cqs_attention.report",
    "last_run_stats": "cqs_attention.report",
    # integrations
    "CheckpointError": "cqs_attention.checkpoint",
    "CQSAttention": "cqs_attention.module",
    # the plain query-block schedule as a function
    "out_of_core_attention": "cqs_attention.api",
}
_SUBMODULES = ("distributed",)

__all__ = [
    "AttentionInputError",
    "CQSAttention",
    "CheckpointError",
    "KernelUnavailableError",
    "MaskError",
    "MemoryBudgetError",
    "PlanMismatchError",
    "RankFailureError",
    "RunReport",
    "__version__",
    "attention",
    "available_kernels",
    "distributed",
    "last_run_stats",
    "merge_partials",
    "out_of_core_attention",
    "reference_attention",
    "register_kernel",
    "select_kernel",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from cqs_attention import distributed
    from cqs_attention.api import attention, out_of_core_attention
    from cqs_attention.checkpoint import CheckpointError
    from cqs_attention.errors import (
        AttentionInputError,
        KernelUnavailableError,
        MaskError,
        MemoryBudgetError,
        PlanMismatchError,
        RankFailureError,
    )
    from cqs_attention.kernels import available_kernels, register_kernel, select_kernel
    from cqs_attention.merge import merge_partials
    from cqs_attention.module import CQSAttention
    from cqs_attention.reference import reference_attention
    from cqs_attention.report import RunReport, last_run_stats


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
