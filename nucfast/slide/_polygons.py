"""Polygons of label images along pixel edges: area == pixel count, valid by construction.

Algorithm (one vectorised pass over the tile, no loop over pixels or edges in Python)
--------------------------------------------------------------------------------
Coordinates are pixel *corners*: pixel ``(r, c)`` is the unit square ``[c, c+1] x [r, r+1]`` in
``(x, y) = (col, row)``. Every unit edge between two pixels of different labels (or a pixel and the
outside) is a directed edge of the label on its left (left = math orientation, ``(-dy, dx)``), so the
exterior ring of a nucleus has positive shoelace area and its holes negative. At the end vertex of an
edge the next edge of the same ring is chosen from the two pixels ahead of it (ahead-left ``AL``,
ahead-right ``AR``): turn left when ``AL`` is not the label, right when ``AR`` is, otherwise straight.
At a saddle (two diagonal pixels of the label, the other two not) this turns left, so pixels that
touch only at a corner are not joined. Where those two pixels still belong to one 4-connected
component, its ring passes that vertex twice (the outer boundary and a pocket of background that reaches
it diagonally); such rings are split at the repeated vertex into simple loops (a Python step over those
few rings only). Consequences, checked on random label images and real masks in the tests:

- every ring is simple; a label's 4-connected components are separate exterior rings (a MultiPolygon
  whose parts touch at isolated points, which OGC/shapely allows), and a pocket that reaches the outside
  only diagonally is a hole touching its shell at one point (also allowed): valid without repair;
- the area of the polygon is exactly the number of pixels, and its centroid is exactly the mean pixel
  centre ``(mean col + 0.5, mean row + 0.5)``; the pixel centres inside it are exactly the label's.

The successor of each edge is found with one dense lookup table (vertex x direction), rings are
identified by pointer jumping (``ceil(log2(longest ring))`` numpy steps over all edges of the tile),
and only corner vertices are kept (collinear points dropped). Assigning holes to exteriors needs a
point-in-polygon test only for labels with several exterior rings (rare); shapely does it there.
"""

from __future__ import annotations

import threading

import numpy as np
import shapely

__all__ = ["trace_label_rings", "label_polygons"]

_tls = threading.local()


def _scratch(n: int, dtype) -> np.ndarray:
    """A per-thread scratch buffer of at least ``n`` elements (reused: no page faults per tile)."""
    buf = getattr(_tls, "buf", None)
    if buf is None or buf.dtype != dtype or buf.size < n:
        buf = np.empty(n, dtype)
        _tls.buf = buf
    return buf[:n]


# direction d: 0 = +x, 1 = +y, 2 = -x, 3 = -y; left turn = d + 1, right turn = d - 1 (mod 4)
_DX = np.array([1, 0, -1, 0], np.int64)
_DY = np.array([0, 1, 0, -1], np.int64)


def trace_label_rings(labels: np.ndarray):
    """All boundary rings of all labels of ``labels`` (0 = background).

    Parameters
    ----------
    labels : (H, W) integer ndarray

    Returns
    -------
    ring_label : (R,) int64
        Label of each ring.
    ring_offsets : (R + 1,) int64
        Ring ``i``'s vertices are ``xy[ring_offsets[i]:ring_offsets[i+1]]`` (not closed: the first
        vertex is not repeated).
    xy : (V, 2) int64
        Corner coordinates ``(x, y) = (col, row)`` of the vertices, corners only.
    ring_area2 : (R,) int64
        Twice the signed shoelace area: positive for exterior rings, negative for holes.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got {lab.dtype}")
    h, w = lab.shape
    empty = (
        np.zeros(0, np.int64),
        np.zeros(1, np.int64),
        np.zeros((0, 2), np.int64),
        np.zeros(0, np.int64),
    )
    if h == 0 or w == 0:
        return empty
    W2 = w + 2
    P = np.zeros((h + 2, W2), lab.dtype)  # (a fresh zeroed buffer is cheaper than clearing a cached one)
    P[1:-1, 1:-1] = lab
    Pf = P.ravel()
    W1 = w + 1
    it = np.int32 if (h + 2) * W2 * 4 < 2**31 else np.int64
    # Unit edges as flat indices into P of the pixel left of them, per direction. A horizontal boundary
    # at y = r, x = c lies between P[r, c+1] (above) and P[r+1, c+1] (below); a vertical one at x = c,
    # y = r between P[r+1, c] (left) and P[r+1, c+1] (right).
    hb = np.flatnonzero(P[:-1, 1:-1] != P[1:, 1:-1]).astype(it)  # in the (h+1, w) grid
    hy, hx = np.divmod(hb, it(w))
    above = hy * W2 + hx + 1
    below = above + W2
    vb = np.flatnonzero(P[1:-1, :-1] != P[1:-1, 1:]).astype(it)  # in the (h, w+1) grid
    vy, vx = np.divmod(vb, it(W1))
    left = (vy + 1) * W2 + vx
    right = left + 1
    la, lb, ll, lr = Pf[above], Pf[below], Pf[left], Pf[right]
    me, mw, ms, mn = lb != 0, la != 0, ll != 0, lr != 0
    # start vertex (x, y), label, and the P indices of the ahead-left / ahead-right pixels at the end
    # vertex; a vertex (X, Y) has NW = P[Y, X], NE = NW + 1, SW = NW + W2, SE = SW + 1
    groups = [  # east: starts (c, r), ends (c+1, r): AL = SE, AR = NE
        (hx[me], hy[me], lb[me], 0, lambda X, Y: (Y * W2 + X) + W2 + 1, lambda X, Y: Y * W2 + X + 1),
        # south: starts (c, r), ends (c, r+1): AL = SW, AR = SE
        (vx[ms], vy[ms], ll[ms], 1, lambda X, Y: Y * W2 + X + W2, lambda X, Y: Y * W2 + X + W2 + 1),
        # west: starts (c+1, r), ends (c, r): AL = NW, AR = SW
        (hx[mw] + 1, hy[mw], la[mw], 2, lambda X, Y: Y * W2 + X, lambda X, Y: Y * W2 + X + W2),
        # north: starts (c, r+1), ends (c, r): AL = NE, AR = NW
        (vx[mn], vy[mn] + 1, lr[mn], 3, lambda X, Y: Y * W2 + X + 1, lambda X, Y: Y * W2 + X),
    ]
    xs_, ys_, ls_, ds_, nk_ = [], [], [], [], []
    for gx, gy, gl, gd, f_al, f_ar in groups:
        X, Y = gx + _DX[gd], gy + _DY[gd]
        al, ar = Pf[f_al(X, Y)], Pf[f_ar(X, Y)]
        nd = np.where(al != gl, (gd + 1) & 3, np.where(ar == gl, (gd - 1) & 3, gd)).astype(it)
        xs_.append(gx)
        ys_.append(gy)
        ls_.append(gl)
        ds_.append(np.full(len(gx), gd, it))
        nk_.append((Y * W1 + X) * 4 + nd)  # key of the next edge: (end vertex, new direction)
    x, y = np.concatenate(xs_), np.concatenate(ys_)
    el, d = np.concatenate(ls_), np.concatenate(ds_)
    E = len(x)
    if E == 0:
        return empty
    key = (y * W1 + x) * 4 + d
    table = _scratch((h + 1) * W1 * 4, it)  # only written keys are ever read
    ar_e = np.arange(E, dtype=it)
    table[key] = ar_e
    nxt = table[np.concatenate(nk_)]
    # ring id = smallest edge index of the cycle, and the distance along the ring to it, by pointer
    # jumping: after k steps each edge knows the minimum over the next 2^k edges and where it is; once
    # no minimum changes, it is the cycle's (module docstring)
    rep = ar_e.copy()
    off = np.zeros(E, it)
    jump = nxt.copy()
    step = 1
    while True:
        rj = rep[jump]
        better = rj < rep
        if not better.any():
            break
        np.copyto(off, off[jump] + it(step), where=better)
        np.copyto(rep, rj, where=better)
        jump = jump[jump]
        step *= 2
    # place each edge: ring k's edges at offsets[k] ... in walking order from the head (no sort)
    head = rep == ar_e
    ring_no = np.cumsum(head, dtype=it) - 1
    r_of_e = ring_no[rep]
    R = int(ring_no[-1]) + 1
    rlen = np.bincount(r_of_e, minlength=R).astype(it)
    roff = np.zeros(R + 1, it)
    np.cumsum(rlen, out=roff[1:])
    L = rlen[r_of_e]
    rank = L - off
    rank[rank == L] = 0
    order = np.empty(E, it)
    order[roff[:-1][r_of_e] + rank] = ar_e
    d_o = d[order]
    ring_first = roff[:-1]
    prev_d = np.empty(E, it)
    prev_d[1:] = d_o[:-1]
    prev_d[ring_first] = d_o[roff[1:] - 1]
    corner = d_o != prev_d  # the edge starts at a corner of its ring
    oc = order[corner]
    xs, ys = x[oc].astype(np.int64), y[oc].astype(np.int64)
    ring_of_v = r_of_e[oc]
    counts = np.bincount(ring_of_v, minlength=R)
    offsets = np.zeros(R + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    ring_label = el[order[ring_first]].astype(np.int64)
    # a ring through a saddle whose two diagonal pixels are one 4-connected component passes that
    # vertex twice (outer boundary + a pocket reaching it diagonally): split it there into simple loops
    vkey = ring_of_v.astype(np.int64) * ((h + 1) * W1) + ys * W1 + xs
    srt = np.sort(vkey)
    dup = srt[1:][srt[1:] == srt[:-1]]
    if len(dup):
        ring_label, offsets, xs, ys = _split_rings(
            np.unique(dup // ((h + 1) * W1)), ring_label, offsets, xs, ys
        )
    # shoelace per ring (next vertex within the ring, wrapping)
    idx = np.arange(len(xs))
    nxt_v = idx + 1
    nxt_v[offsets[1:] - 1] = offsets[:-1]
    cross = xs * ys[nxt_v] - xs[nxt_v] * ys
    area2 = np.add.reduceat(cross, offsets[:-1]) if len(xs) else np.zeros(0, np.int64)
    return ring_label, offsets, np.stack([xs, ys], axis=1), area2


def _simple_loops(v: list) -> list:
    """Split a closed vertex loop at its repeated vertices into loops that visit each vertex once."""
    seen: dict = {}
    for j, p in enumerate(v):
        i = seen.get(p)
        if i is not None:
            return _simple_loops(v[i:j]) + _simple_loops(v[:i] + v[j:])
        seen[p] = j
    return [v]


def _split_rings(bad, ring_label, offsets, xs, ys):
    """Replace the rings ``bad`` (each visiting some vertex twice) by their simple loops (rare)."""
    keep = np.ones(len(ring_label), bool)
    keep[bad] = False
    lab_out, x_out, y_out = [ring_label[keep]], [], []
    lens = np.diff(offsets)
    vsel = np.repeat(keep, lens)
    x_out.append(xs[vsel])
    y_out.append(ys[vsel])
    new_lens = [lens[keep]]
    for r in bad:
        a, b = offsets[r], offsets[r + 1]
        for loop in _simple_loops(list(zip(xs[a:b].tolist(), ys[a:b].tolist(), strict=True))):
            arr = np.asarray(loop, np.int64)
            x_out.append(arr[:, 0])
            y_out.append(arr[:, 1])
            lab_out.append(np.array([ring_label[r]], np.int64))
            new_lens.append(np.array([len(loop)], np.int64))
    lens2 = np.concatenate(new_lens)
    off2 = np.zeros(len(lens2) + 1, np.int64)
    np.cumsum(lens2, out=off2[1:])
    return np.concatenate(lab_out), off2, np.concatenate(x_out), np.concatenate(y_out)


def label_polygons(labels: np.ndarray, ids, *, origin=(0.0, 0.0), scale: float = 1.0):
    """Shapely (Multi)Polygons of the labels ``ids`` of ``labels``, along pixel edges.

    Parameters
    ----------
    labels : (H, W) integer ndarray
    ids : sequence of int
        Labels wanted (each must be present); the result follows this order.
    origin : (row, col)
        Added to the pixel coordinates before scaling (the tile's position).
    scale : float
        Output units per pixel (e.g. level-0 pixels per working pixel).

    Returns
    -------
    ndarray of shapely geometries
        ``Polygon`` for a 4-connected label, ``MultiPolygon`` otherwise; ``area == count * scale**2``.
        Every geometry is valid (checked; repaired with ``shapely.make_valid`` should tracing ever fail,
        which has not been observed).
    """
    ids = np.asarray(ids, np.int64)
    if len(ids) == 0:
        return np.empty(0, object)
    lab = np.asarray(labels)
    n = len(ids)
    top = max(int(lab.max()) if lab.size else 0, int(ids.max()))
    if top == n and (ids == np.arange(1, n + 1)).all():  # already 1..n in order (the engine's case)
        sub = lab
    elif top < 1 << 24:  # keep only the wanted labels, renumbered 1..n in the order of ids
        lut = np.zeros(top + 1, np.int32)
        lut[ids] = np.arange(1, n + 1, dtype=np.int32)
        sub = lut[lab]
    else:  # huge label values: compact them first
        u, inv = np.unique(lab, return_inverse=True)
        pos = np.minimum(np.searchsorted(u, ids), len(u) - 1)
        if not (u[pos] == ids).all():
            raise ValueError(f"labels {ids[u[pos] != ids][:5].tolist()} are not present in the label image")
        lut = np.zeros(len(u), np.int32)
        lut[pos] = np.arange(1, n + 1, dtype=np.int32)
        sub = lut[inv.reshape(lab.shape)]
    rl, off, xy, a2 = trace_label_rings(sub)
    r0, c0 = origin
    coords = np.empty(xy.shape, np.float64)
    coords[:, 0] = (xy[:, 0] + c0) * scale
    coords[:, 1] = (xy[:, 1] + r0) * scale
    ext = a2 > 0
    n_ext = np.bincount(rl[ext], minlength=n + 1)
    if (n_ext[1:] == 0).any():
        missing = ids[np.nonzero(n_ext[1:] == 0)[0]]
        raise ValueError(f"labels {missing[:5].tolist()} are not present in the label image")
    simple = n_ext == 1  # one exterior ring: every hole of the label is its hole
    # rings ordered by label, exterior first, so each simple label's rings form one polygon
    order = np.lexsort((~ext, rl))
    lens = np.diff(off)
    ring_lens = lens[order]
    starts = off[:-1][order]
    # gather the vertices of the reordered rings, closing each ring (repeat first vertex)
    closed_off = np.zeros(len(order) + 1, np.int64)
    np.cumsum(ring_lens + 1, out=closed_off[1:])
    rep_len = np.repeat(ring_lens, ring_lens + 1)
    within = np.arange(closed_off[-1]) - np.repeat(closed_off[:-1], ring_lens + 1)
    src = np.repeat(starts, ring_lens + 1) + np.where(within == rep_len, 0, within)
    pts = coords[src]
    rl_o = rl[order]
    out = np.empty(n, object)
    sel = simple[rl_o]
    if sel.any():
        ring_idx = np.nonzero(sel)[0]
        # polygon offsets over the rings of simple labels
        lab_of_ring = rl_o[ring_idx]
        first = np.ones(len(ring_idx), bool)
        first[1:] = lab_of_ring[1:] != lab_of_ring[:-1]
        poly_off = np.append(np.nonzero(first)[0], len(ring_idx))
        # coordinates of the selected rings only
        keep_pts = np.repeat(sel, ring_lens + 1)
        sel_lens = ring_lens[ring_idx] + 1
        geom_off = np.zeros(len(ring_idx) + 1, np.int64)
        np.cumsum(sel_lens, out=geom_off[1:])
        polys = shapely.from_ragged_array(shapely.GeometryType.POLYGON, pts[keep_pts], (geom_off, poly_off))
        out[lab_of_ring[first] - 1] = polys
    for k in np.nonzero(~simple[1:])[0] + 1:  # several exterior rings (rare): holes by containment
        rings = np.nonzero(rl_o == k)[0]
        shells, holes = [], []
        for i in rings:
            ring = pts[closed_off[i] : closed_off[i + 1]]
            (shells if ext[order[i]] else holes).append(ring)
        sp = [shapely.Polygon(s) for s in shells]
        assigned: list[list] = [[] for _ in sp]
        for hring in holes:
            hp = shapely.Polygon(hring)
            best, best_area = None, np.inf
            for j, s in enumerate(sp):
                if s.area < best_area and s.covers(hp):
                    best, best_area = j, s.area
            assigned[best if best is not None else 0].append(hring)
        parts = [shapely.Polygon(s, assigned[j]) for j, s in enumerate(shells)]
        out[k - 1] = shapely.MultiPolygon(parts)
        if not out[k - 1].is_valid:  # not expected (module docstring); repair rather than write it invalid
            out[k - 1] = shapely.make_valid(out[k - 1])
    return out
