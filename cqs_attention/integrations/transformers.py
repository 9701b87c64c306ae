"""Use cqs attention as a Hugging Face ``transformers`` attention implementation.

:func:`register` adds an attention function to ``transformers.AttentionInterface`` and a
matching mask function to ``transformers.masking_utils.AttentionMaskInterface`` under one
name (default ``"cqs"``), after which any model that supports the attention interface runs
with it::

    from cqs_attention.integrations.transformers import register
    register(memory_budget="4GiB")
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="cqs")

How masks travel. transformers builds one mask per layer type (full / sliding) before the
layers run and hands it to every attention call. For ``"cqs"`` that mask is a light
:class:`CQSMask` instead of a ``(B, 1, Lq, Lk)`` tensor:

* the causal and sliding-window structure is recognised from transformers' own mask
  functions (``causal_mask_function``, ``sliding_window_causal_mask_function(w)``, the
  bidirectional variants, their ``and_masks`` combinations) and passed to
  :func:`cqs_attention.attention` as ``causal=`` / ``window=``, so plans skip every chunk pair
  the mask empties;
* the 2D padding mask (the ``attention_mask`` argument of the model) becomes a ``mask_mod``
  reading ``padding[b, kv_idx]``;
* anything not recognised (image-token ``or_mask_function`` overlays, packed sequences,
  chunked attention, static-cache offsets) falls back to transformers' exact mask function,
  offsets and padding included, passed as ``mask_mod``: always correct, only the plan cannot
  skip chunk pairs in advance.

The attention function honours the ``scaling`` the model passes, GQA (fewer key/value heads),
``is_causal`` when no mask is given (like ``sdpa``), and a 4D bool or 0/-inf float mask a user
passes directly. It returns ``(attn_output, None)`` with ``attn_output`` of shape
``(batch, seq, heads, head_dim)``. Unsupported features raise :class:`NotImplementedError`
naming the feature: attention dropout during training, ``softcap``, ``position_bias``,
attention sinks (``s_aux``).

``output_attentions=True``: like transformers' own ``sdpa`` integration, cqs attention never
materialises the attention weights; it logs a warning once (logger
``cqs_attention.integrations.transformers``) and the model's ``attentions`` stay empty. Use
``attn_implementation="eager"`` when you need them.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from cqs_attention.module import (
    CQSAttention,
    and_mask_mods,
    bool_mask_to_mask_mod,
    check_attn_mask_shape,
    float_mask_to_bool,
)

__all__ = ["CQSMask", "cqs_mask_interface", "make_attention_function", "register", "unregister"]

_OPTION_NAMES = ("memory_budget", "backend", "plan", "device", "progress")
_REGISTERED: dict[str, CQSAttention] = {}


@dataclass(frozen=True, eq=False)
class CQSMask:
    """The mask transformers hands to the cqs attention function.

    Attributes
    ----------
    q_length, kv_length
        Query and key/value lengths of the attention calls this mask is for.
    causal, window
        The recognised structure (``window=(left, right)`` in the sense of
        :func:`cqs_attention.attention`), or ``causal=None`` when the mask function was not
        recognised and ``mask_mod`` carries the whole mask.
    padding
        ``(B, kv_length)`` bool, ``True`` for real tokens; ``None`` when nothing is padded.
    mask_mod
        The exact mask as a FlexAttention-style function in LOCAL indices (only set in the
        fallback case).
    """

    q_length: int
    kv_length: int
    causal: bool | None
    window: tuple[int | None, int | None] | None
    padding: torch.Tensor | None
    mask_mod: Callable[..., Any] | None = None

    @property
    def recognised(self) -> bool:
        return self.causal is not None


class _PaddingMaskMod:
    """``mask_mod`` that hides padded keys: ``padding[b, kv_idx]``."""

    def __init__(self, padding: torch.Tensor) -> None:
        self.padding = padding

    def __call__(self, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> torch.Tensor:
        dev = self.padding.device
        kv = torch.as_tensor(kv_idx)
        return self.padding[torch.as_tensor(b).to(dev), kv.to(dev)].to(kv.device)


class _OnDevice:
    """Evaluate a transformers mask function on ``device`` (where its tensors live)."""

    def __init__(self, fn: Callable[..., Any], device: torch.device) -> None:
        self.fn, self.device = fn, device

    def __call__(self, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> torch.Tensor:
        kv = torch.as_tensor(kv_idx)
        args = (torch.as_tensor(x).to(self.device) for x in (b, h, q_idx, kv_idx))
        return torch.as_tensor(self.fn(*args)).to(kv.device)


def _masking_utils() -> Any:
    try:
        from transformers import masking_utils
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "cqs_attention.integrations.transformers needs transformers >= 4.53 "
            "(masking_utils.AttentionMaskInterface); install it with `pip install "
            "'cqs[transformers]'`"
        ) from exc
    if not hasattr(masking_utils, "AttentionMaskInterface"):
        raise ImportError("cqs_attention.integrations.transformers needs transformers >= 4.53 "
                          "(masking_utils.AttentionMaskInterface is missing)")
    return masking_utils


def _structure(fn: Callable[..., Any]) -> tuple[bool, tuple[int | None, int | None] | None] | None:
    """``(causal, window)`` when ``fn`` is a known transformers mask function, else ``None``."""
    mu = _masking_utils()
    parts: list[Callable[..., Any]] = []
    stack = [fn]
    while stack:
        f = stack.pop()
        if getattr(f, "__qualname__", "") == "and_masks.<locals>.and_mask":
            stack.extend(inspect.getclosurevars(f).nonlocals.get("mask_functions", ()))
        else:
            parts.append(f)
    causal, base = False, False
    left: int | None = None
    right: int | None = None

    def tighten(cur: int | None, new: int) -> int:
        return new if cur is None else min(cur, new)

    for f in parts:
        qualname = getattr(f, "__qualname__", "")
        if f is getattr(mu, "causal_mask_function", None):
            causal = base = True
        elif f is getattr(mu, "bidirectional_mask_function", None):
            base = True
        elif qualname == "sliding_window_overlay.<locals>.inner_mask":
            w = inspect.getclosurevars(f).nonlocals.get("sliding_window")
            if not isinstance(w, int) or w < 1:
                return None
            left = tighten(left, w - 1)  # kv_idx > q_idx - w
        elif qualname == "sliding_window_bidirectional_overlay.<locals>.inner_mask":
            w = inspect.getclosurevars(f).nonlocals.get("sliding_window")
            if not isinstance(w, int) or w < 0:
                return None
            left, right = tighten(left, w), tighten(right, w)  # |q_idx - kv_idx| <= w
        else:
            return None
    if not base:
        return None
    if causal:
        right = None
    window = None if left is None and right is None else (left, right)
    return causal, window


def cqs_mask_interface(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int | torch.Tensor = 0,
    kv_offset: int | torch.Tensor = 0,
    mask_function: Callable[..., Any] | None = None,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> CQSMask:
    """The mask function registered with ``AttentionMaskInterface`` (see the module docstring).

    Receives what transformers gives every mask function (sizes, offsets, the composed
    ``mask_function`` and the 2D padding ``attention_mask``) and returns a :class:`CQSMask`.
    """
    mu = _masking_utils()
    if mask_function is None:
        mask_function = mu.causal_mask_function
    padding_full = mu.prepare_padding_mask(attention_mask, kv_length, kv_offset)
    aligned = (isinstance(q_offset, int) and isinstance(kv_offset, int)
               and q_offset - kv_offset == kv_length - q_length)
    structure = _structure(mask_function) if aligned else None
    if structure is not None:
        padding = None
        if padding_full is not None:
            padding = padding_full[:, kv_offset:kv_offset + kv_length].to(torch.bool)
            if not torch.compiler.is_compiling() and bool(padding.all()):
                padding = None
        causal, window = structure
        return CQSMask(q_length, kv_length, causal, window, padding)
    # Fallback: transformers' exact mask function, as flex_attention_mask builds it.
    if padding_full is not None:
        mask_function = mu.and_masks(mask_function,
                                     mu.padding_mask_function(padding_full.to(torch.bool)))
    exact = mu.add_offsets_to_mask_function(mask_function, q_offset, kv_offset)
    device = torch.device(kwargs.get("device", "cpu"))
    return CQSMask(q_length, kv_length, None, None, None, mask_mod=_OnDevice(exact, device))


logger = logging.getLogger(__name__)
_WARNED: set[str] = set()
OUTPUT_ATTENTIONS_WARNING = (
    "cqs attention does not support `output_attentions=True` (it never materialises the "
    "attention weights; the model's attentions stay empty). Please set your attention to "
    "`eager` if you want any of these features."
)


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time only (transformers' ``warning_once``)."""
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


_UNSUPPORTED_KWARGS = {
    "softcap": "attention logit soft-capping (softcap)",
    "position_bias": "an additive position bias (position_bias)",
    "s_aux": "attention sinks (s_aux)",
}


def make_attention_function(attn: CQSAttention) -> Callable[..., tuple[torch.Tensor, None]]:
    """An ``AttentionInterface`` function that runs ``attn`` (a :class:`CQSAttention`)."""

    def cqs_attention_forward(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: CQSMask | torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        is_causal: bool | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        for name, what in _UNSUPPORTED_KWARGS.items():
            if kwargs.get(name) is not None:
                raise NotImplementedError(f"cqs attention does not support {what}; use "
                                          "attn_implementation='eager' for this model")
        if kwargs.get("output_attentions", False):
            _warn_once(OUTPUT_ATTENTIONS_WARNING)  # what transformers' sdpa does
        if dropout and module.training:
            raise NotImplementedError(
                f"cqs attention has no attention dropout (the model asks for {dropout!r} in "
                "training mode); set the config's attention_dropout to 0.0"
            )
        lq, lk = query.shape[2], key.shape[2]
        causal = False
        window = None
        mask_mod = None
        if isinstance(attention_mask, CQSMask):
            if attention_mask.recognised:
                causal, window = bool(attention_mask.causal), attention_mask.window
                if attention_mask.padding is not None:
                    mask_mod = _PaddingMaskMod(attention_mask.padding)
            else:
                mask_mod = attention_mask.mask_mod
            if (attention_mask.q_length, attention_mask.kv_length) != (lq, lk):
                raise ValueError(
                    f"the cqs mask was built for (q_length, kv_length) = "
                    f"{(attention_mask.q_length, attention_mask.kv_length)} but attention got "
                    f"{(lq, lk)}"
                )
        elif attention_mask is None:
            # Same rule as transformers' sdpa integration.
            wants_causal = is_causal if is_causal is not None else getattr(module, "is_causal",
                                                                           True)
            if wants_causal and lq > 1:
                if lk > lq:  # empty static cache: keys past q_length are not written yet
                    key, value = key[:, :, :lq], value[:, :, :lq]
                causal = True
        elif isinstance(attention_mask, torch.Tensor):
            mask = attention_mask[..., :lk]
            check_attn_mask_shape(mask, (query.shape[0], query.shape[1], lq, lk))
            bool_mask = mask if mask.dtype == torch.bool else float_mask_to_bool(mask)
            mask_mod = bool_mask_to_mask_mod(bool_mask)
        else:
            raise TypeError(
                f"attention_mask of type {type(attention_mask).__name__} is not supported by "
                "cqs attention; expected a CQSMask (from the 'cqs' mask interface), a 4D tensor "
                "or None"
            )
        out = attn(query, key, value, scale=scaling, causal=causal, window=window,
                   mask_mod=and_mask_mods(mask_mod))
        return out.transpose(1, 2).contiguous(), None

    cqs_attention_forward.cqs_module = attn  # type: ignore[attr-defined]
    return cqs_attention_forward


def register(name: str = "cqs", **defaults: Any) -> str:
    """Register cqs attention with transformers under ``name``.

    Parameters
    ----------
    name
        The ``attn_implementation`` string models will use.
    **defaults
        Execution options for every call, those of :class:`cqs_attention.CQSAttention`:
        ``memory_budget``, ``backend``, ``plan``, ``device``, ``progress``.

    Returns
    -------
    str
        ``name``, for ``attn_implementation=register()``.

    Raises
    ------
    ValueError
        If ``name`` is empty or one of transformers' own implementations, or an option is
        unknown.
    ImportError
        If transformers (>= 4.53) is not installed.

    Examples
    --------
    >>> from cqs_attention.integrations.transformers import register
    >>> register("cqs", memory_budget="1GiB")  # doctest: +SKIP
    'cqs'
    >>> model = AutoModelForCausalLM.from_config(cfg, attn_implementation="cqs")  # doctest: +SKIP
    """
    mu = _masking_utils()
    from transformers import AttentionInterface

    if not isinstance(name, str) or not name or name.startswith("paged|"):
        raise ValueError(f"name must be a non-empty string not starting with 'paged|', "
                         f"got {name!r}")
    builtin = {"eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3",
               "flash_attention_4"}
    if name in builtin:
        raise ValueError(f"name {name!r} is one of transformers' own implementations; choose "
                         "another, e.g. 'cqs'")
    unknown = sorted(set(defaults) - set(_OPTION_NAMES))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; valid: {list(_OPTION_NAMES)}")
    attn = CQSAttention(**defaults)
    AttentionInterface.register(name, make_attention_function(attn))
    mu.AttentionMaskInterface.register(name, cqs_mask_interface)
    _REGISTERED[name] = attn
    return name


def unregister(name: str = "cqs") -> None:
    """Remove a name added by :func:`register` (no error if it is not registered)."""
    mu = _masking_utils()
    from transformers import AttentionInterface

    if _REGISTERED.pop(name, None) is None:
        return
    AttentionInterface._global_mapping.pop(name, None)
    mu.AttentionMaskInterface._global_mapping.pop(name, None)
