"""cqs_attention: exact, memory-adaptive streamed attention driven by cqs_design plans.

>>> import torch, cqs_attention
>>> q = torch.randn(1, 2, 40, 8)
>>> out = cqs_attention.attention(q, q, q, causal=True)
>>> out.shape
torch.Size([1, 2, 40, 8])
"""

from __future__ import annotations

__version__ = "0.1.0"

# --- attention core (issue: cqs_attention core) ------------------------------------------
from cqs_attention.api import attention
from cqs_attention.errors import (
    AttentionInputError,
    KernelUnavailableError,
    MaskError,
    MemoryBudgetError,
    PlanMismatchError,
)
from cqs_attention.kernels import available_kernels, register_kernel, select_kernel
from cqs_attention.merge import merge_partials
from cqs_attention.reference import reference_attention
from cqs_attention.report import RunReport, last_run_stats

__all__ = [
    "AttentionInputError",
    "KernelUnavailableError",
    "MaskError",
    "MemoryBudgetError",
    "PlanMismatchError",
    "RunReport",
    "__version__",
    "attention",
    "available_kernels",
    "last_run_stats",
    "merge_partials",
    "reference_attention",
    "register_kernel",
    "select_kernel",
]

# --- integrations (issue: transformers / CLI) --------------------------------------------
from cqs_attention import distributed
from cqs_attention.checkpoint import CheckpointError
from cqs_attention.module import CQSAttention

__all__ += ["CQSAttention", "CheckpointError", "distributed"]

# --- the plain query-block schedule as a function ------------------------------------------
from cqs_attention.api import out_of_core_attention  # noqa: E402

__all__ += ["out_of_core_attention"]
