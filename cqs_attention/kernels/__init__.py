"""Kernel registry and dispatcher.

The registry is an ordered list of kernel instances (see :mod:`cqs_attention.kernels.base`).
:func:`select_kernel` returns the first whose ``not_supported(...)`` list is empty, or the one
forced by ``backend=``; when none can run, :class:`~cqs_attention.errors.KernelUnavailableError`
lists every kernel's reasons.

Adding a backend: create ``cqs_attention/kernels/<name>.py`` defining ``KERNELS`` (a list of
kernel instances). Each instance has ``name`` and optionally ``priority`` (lower runs first;
default 100; the reference kernel has 1000). Modules here are discovered and imported on first
use; a module that fails to import is recorded (see :func:`import_failures`, shown by
``python -m cqs_attention.info``) and warned about, never silently dropped. Kernels may also be
added at run time with :func:`register_kernel`.

>>> from cqs_attention.kernels import select_kernel
>>> import torch
>>> select_kernel("auto", device=torch.device("cpu"), dtype=torch.float64, head_dim=8,
...               mask=None, gqa=False, needs_grad=False).name
'reference'
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings

import torch

from cqs_attention.errors import AttentionInputError, KernelUnavailableError
from cqs_attention.kernels.base import BlockMask, Kernel
from cqs_attention.kernels.reference import ReferenceKernel

__all__ = [
    "BlockMask",
    "Kernel",
    "available_kernels",
    "check_backend",
    "import_failures",
    "kernel_reasons",
    "register_kernel",
    "registry_version",
    "select_kernel",
    "unregister_kernel",
]

_KERNELS: list[Kernel] = []
#: bumped on every change of the registry (dispatch caches key on it)
VERSION = [0]
_FAILURES: dict[str, str] = {}
_DISCOVERED = False
_SKIP = {"base", "reference"}


def _priority(kernel: Kernel) -> float:
    return getattr(kernel, "priority", 100)


def register_kernel(kernel: Kernel) -> None:
    """Add ``kernel`` (replacing one of the same name), keeping the list sorted by priority.

    >>> class Dummy:
    ...     name = "dummy"; priority = 2000
    ...     def not_supported(self, **kw): return ["dummy never runs"]
    >>> register_kernel(Dummy()); "dummy" in [k.name for k in available_kernels()]
    True
    >>> unregister_kernel("dummy")
    """
    _discover()
    if not isinstance(getattr(kernel, "name", None), str):
        raise TypeError(f"kernel must have a str name, got {kernel!r}")
    _KERNELS[:] = [k for k in _KERNELS if k.name != kernel.name]
    _KERNELS.append(kernel)
    _KERNELS.sort(key=_priority)
    VERSION[0] += 1


def unregister_kernel(name: str) -> None:
    """Remove the kernel called ``name`` (no-op when absent)."""
    _KERNELS[:] = [k for k in _KERNELS if k.name != name]
    VERSION[0] += 1


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    _KERNELS.append(ReferenceKernel())
    for info in pkgutil.iter_modules(__path__):
        if info.name in _SKIP or info.name.startswith("_"):
            continue
        modname = f"{__name__}.{info.name}"
        try:
            mod = importlib.import_module(modname)
        except Exception as exc:  # recorded and reported, never silently dropped
            _FAILURES[modname] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"cqs_attention kernel module {modname} failed to import: {exc}",
                          RuntimeWarning, stacklevel=2)
            continue
        for kernel in getattr(mod, "KERNELS", ()):
            _KERNELS[:] = [k for k in _KERNELS if k.name != kernel.name]
            _KERNELS.append(kernel)
    _KERNELS.sort(key=_priority)


def available_kernels() -> list[Kernel]:
    """The registered kernels in dispatch order (whether or not they can run here)."""
    _discover()
    return list(_KERNELS)


def registry_version() -> int:
    """A number that changes whenever the registry does (decisions cached on kernels key on
    it)."""
    return VERSION[0]


def check_backend(backend: object) -> str:
    """``backend`` if it is ``"auto"`` or a registered kernel's name; else
    :class:`~cqs_attention.errors.AttentionInputError` (not a non-empty str) or
    :class:`~cqs_attention.errors.KernelUnavailableError` (no such kernel), naming the valid
    names.

    >>> check_backend("auto")
    'auto'
    >>> check_backend("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cqs_attention.errors.KernelUnavailableError: backend='nope' is not a registered kernel; \
valid: 'auto', ...
    """
    if not isinstance(backend, str) or not backend:
        raise AttentionInputError(f"backend must be 'auto' or the name of a registered kernel, "
                                  f"got {backend!r}")
    if backend != "auto":
        names = [k.name for k in available_kernels()]
        if backend not in names:
            raise KernelUnavailableError(f"backend={backend!r} is not a registered kernel; "
                                         "valid: 'auto', " + ", ".join(map(repr, names)))
    return backend


def import_failures() -> dict[str, str]:
    """Kernel modules that failed to import, with the error."""
    _discover()
    return dict(_FAILURES)


def kernel_reasons(*, device: torch.device, dtype: torch.dtype, head_dim: int,
                   mask: BlockMask | None, gqa: bool, needs_grad: bool) -> dict[str, list[str]]:
    """Every registered kernel's "not supported" reasons for one call (empty list: can run)."""
    _discover()
    props = {"device": torch.device(device), "dtype": dtype, "head_dim": head_dim,
             "mask": mask, "gqa": gqa, "needs_grad": needs_grad}
    return {k.name: list(k.not_supported(**props)) for k in _KERNELS}


def select_kernel(backend: str = "auto", *, device: torch.device, dtype: torch.dtype,
                  head_dim: int, mask: BlockMask | None, gqa: bool,
                  needs_grad: bool) -> Kernel:
    """The kernel to run one call: the first that supports it, or the forced ``backend``.

    Raises
    ------
    KernelUnavailableError
        When no kernel (or not the forced one) can run; lists every reason.
    """
    _discover()
    if backend != "auto" and all(k.name != backend for k in _KERNELS):
        check_backend(backend)
    props = {"device": torch.device(device), "dtype": dtype, "head_dim": head_dim,
             "mask": mask, "gqa": gqa, "needs_grad": needs_grad}
    reasons: dict[str, list[str]] = {}
    for kernel in _KERNELS:
        if backend not in ("auto", kernel.name):
            continue
        why = list(kernel.not_supported(**props))
        if not why:
            return kernel
        reasons[kernel.name] = why
    desc = (f"device={props['device']}, dtype={dtype}, head_dim={head_dim}, "
            f"mask={'none' if mask is None or mask.is_full else 'partial'}, gqa={gqa}, "
            f"needs_grad={needs_grad}")
    lines = "; ".join(f"{n}: {', '.join(r)}" for n, r in reasons.items())
    who = "no kernel can" if backend == "auto" else f"backend={backend!r} cannot"
    raise KernelUnavailableError(f"{who} run this call ({desc}). Reasons: {lines}")
