"""The one cache of planning decisions (:data:`DECISIONS`)."""

from __future__ import annotations

import collections
from typing import Any


class DecisionCache:
    """The one cache of planning decisions, keyed by everything that decides them.

    Keys are tuples whose first item names the decision: ``("plan", ...)`` a call's
    :class:`Planned` (see :func:`plan_call` for its key), ``("valid", digest)`` a given plan
    proven an exact cover, ``("calibration", device)`` a device's measured :class:`CostModel`.
    Values are read-only and hold no state of any run. Least recently used entries go first
    beyond ``size``; calibrations (seconds to measure) are kept.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._lru: collections.OrderedDict[tuple[Any, ...], Any] = collections.OrderedDict()
        self._kept: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[Any, ...]) -> Any:
        """The value stored under ``key``, or None."""
        # a key is in one of the two dicts at most (see put); most lookups are calls' plans
        hit = self._lru.get(key)
        if hit is not None:
            self._lru.move_to_end(key)
            return hit
        return self._kept.get(key)

    def put(self, key: tuple[Any, ...], value: Any, *, keep: bool = False) -> None:
        """Store ``value`` under ``key`` (``keep``: never evicted)."""
        if keep:
            self._lru.pop(key, None)
            self._kept[key] = value
            return
        if key in self._kept:  # a kept decision stays kept
            self._kept[key] = value
            return
        self._lru[key] = value
        self._lru.move_to_end(key)
        while len(self._lru) > self.size:
            self._lru.popitem(last=False)

    def clear(self) -> None:
        """Forget every decision (calibrations stored on disk are read again when needed)."""
        self._lru.clear()
        self._kept.clear()

    def __len__(self) -> int:
        return len(self._lru) + len(self._kept)


#: the cache of :func:`plan_call`, :func:`CostModel.for_device` and given plans' validation
DECISIONS = DecisionCache()
