"""An independent check that a difference set's development is a projective plane.

:meth:`DifferenceSet.verify` counts differences. This module checks the same fact a
different way, on the incidence (Levi) graph built with networkx: a ``(v, k, 1)`` set with
``v = k² - k + 1`` develops into a projective plane of order ``k - 1`` exactly when its
incidence graph has ``2v`` vertices, is bipartite, has every vertex of degree ``k`` and has
girth 6 (the Moore bound: a ``k``-regular graph of girth 6 has at least
``2(k² - k + 1)`` vertices, with equality only for projective planes).

>>> from cqs_design import DifferenceSet, verify_projective_plane
>>> verify_projective_plane(DifferenceSet(7, [0, 1, 3]))
True
"""

from __future__ import annotations

from collections import deque

import networkx as nx

from cqs_design.difference_sets import DifferenceSet

__all__ = ["NotAProjectivePlaneError", "verify_projective_plane"]

#: Largest v accepted (the graph has 2v nodes and the 4-cycle check costs O(v k²)).
PROJECTIVE_MAX_V = 200_000


class NotAProjectivePlaneError(ValueError):
    """The development of a set is not a projective plane; the message says which test failed."""


def verify_projective_plane(ds: DifferenceSet) -> bool:
    """Check, on the networkx incidence graph, that ``ds`` develops into a projective plane.

    The checks: ``v = k² - k + 1`` with ``k >= 3``; the graph has ``2v`` vertices; it is
    bipartite (points vs blocks); every vertex has degree ``k``; and its girth is 6, i.e. no
    4-cycle (no two points share two blocks, counted over all blocks' point pairs) and some
    6-cycle (found by a breadth-first search).

    Parameters
    ----------
    ds : DifferenceSet
        The candidate; ``v`` at most ``PROJECTIVE_MAX_V`` (200,000).

    Returns
    -------
    bool
        ``True``; failures raise.

    Raises
    ------
    NotAProjectivePlaneError
        Naming the first failed property.
    TypeError, ValueError
        If ``ds`` is not a DifferenceSet or is too large.

    Examples
    --------
    >>> verify_projective_plane(DifferenceSet(13, [0, 1, 3, 9]))
    True
    >>> verify_projective_plane(DifferenceSet(13, [0, 1, 2, 9]))
    Traceback (most recent call last):
    ...
    cqs_design.projective.NotAProjectivePlaneError: points 1 and 2 lie on 2 common blocks \
(a 4-cycle in the incidence graph), so the girth is 4, not 6
    """
    if not isinstance(ds, DifferenceSet):
        raise TypeError(f"ds must be a DifferenceSet, got {type(ds).__name__}")
    if ds.v > PROJECTIVE_MAX_V:
        raise ValueError(
            f"v = {ds.v} is too large for the graph check; PROJECTIVE_MAX_V = {PROJECTIVE_MAX_V}"
        )
    return _verify_projective_plane(ds)


def _verify_projective_plane(ds: DifferenceSet) -> bool:
    v, k = ds.v, ds.k
    if k < 3 or v != k * k - k + 1:
        raise NotAProjectivePlaneError(
            f"v = {v}, k = {k}: a projective plane needs k >= 3 and "
            f"v = k² - k + 1 = {k * k - k + 1}"
        )
    graph = ds.incidence_graph()
    if graph.number_of_nodes() != 2 * v:
        raise NotAProjectivePlaneError(
            f"the incidence graph has {graph.number_of_nodes()} vertices, not 2v = {2 * v}"
        )
    if not nx.is_bipartite(graph):
        raise NotAProjectivePlaneError("the incidence graph is not bipartite")
    for node, degree in graph.degree():
        if degree != k:
            raise NotAProjectivePlaneError(f"vertex {node} has degree {degree}, not k = {k}")
    points = [n for n, side in graph.nodes(data="bipartite") if side == 0]
    blocks = [n for n, side in graph.nodes(data="bipartite") if side == 1]
    if len(points) != v or len(blocks) != v:
        raise NotAProjectivePlaneError(
            f"{len(points)} points and {len(blocks)} blocks, expected {v} of each"
        )
    # Girth >= 6: in a bipartite graph cycles are even; no 4-cycle <=> no pair of points
    # shares two blocks.
    seen: dict[tuple[int, int], object] = {}
    for block in blocks:
        nbrs = sorted(x for _, x in graph[block])
        for i, a in enumerate(nbrs):
            for b in nbrs[i + 1 :]:
                if (a, b) in seen:
                    raise NotAProjectivePlaneError(
                        f"points {a} and {b} lie on 2 common blocks (a 4-cycle in the "
                        f"incidence graph), so the girth is 4, not 6"
                    )
                seen[(a, b)] = block
    # Girth <= 6: a breadth-first search from one point meets a non-tree edge by depth 3.
    length = _shortest_cycle_through(graph, points[0])
    if length != 6:
        raise NotAProjectivePlaneError(f"the shortest cycle found has length {length}, not 6")
    return True


def _shortest_cycle_through(graph: nx.Graph, root: object) -> float:
    """Length of the shortest cycle detected by a BFS from ``root`` (``inf`` if none)."""
    depth = {root: 0}
    parent = {root: None}
    queue = deque([root])
    best = float("inf")
    while queue:
        node = queue.popleft()
        if 2 * depth[node] + 1 >= best:
            break
        for nbr in graph[node]:
            if nbr not in depth:
                depth[nbr] = depth[node] + 1
                parent[nbr] = node
                queue.append(nbr)
            elif parent[node] != nbr:
                best = min(best, depth[node] + depth[nbr] + 1)
    return best
