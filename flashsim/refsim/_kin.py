"""Small vectorised kinematics helpers on flat numpy columns."""

from __future__ import annotations

import numpy as np


def pt_eta_phi(px, py, pz):
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.divide(pz, pt, out=np.sign(pz) * 1e4, where=pt > 0))
    eta = np.clip(eta, -1e4, 1e4)
    phi = np.arctan2(py, px)
    return pt, eta, phi


def mass(px, py, pz, e):
    m2 = e * e - px * px - py * py - pz * pz
    return np.sqrt(np.maximum(m2, 0.0))


def starts_of(counts):
    counts = np.asarray(counts, dtype=np.int64)
    return np.cumsum(counts) - counts


def event_index(counts):
    return np.repeat(np.arange(len(counts)), counts)


def ragged_arange(counts):
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(total, dtype=np.int64) - np.repeat(starts_of(counts), counts)


def group_sum(group, values, n):
    """Sum of ``values`` per group id in ``[0, n)``."""
    return np.bincount(group, weights=values, minlength=n)[:n] if len(group) else np.zeros(n)


def group_max(group, values, n, fill=-np.inf):
    out = np.full(n, fill, dtype=np.float64)
    if len(group):
        np.maximum.at(out, group, values)
    return out


def kth_largest(group, values, n, k, fill):
    """The k-th largest (k=0,1,2,...) value per group, ``fill`` where the group is smaller."""
    out = np.full(n, fill, dtype=np.float64)
    if len(group) == 0:
        return out
    order = np.lexsort((-values, group))
    g = group[order]
    counts = np.bincount(g, minlength=n)
    starts = starts_of(counts)
    rank = np.arange(len(g)) - starts[g]
    sel = rank == k
    out[g[sel]] = values[order][sel]
    return out


def smear(rng, n, tail_frac, tail_scale):
    """Standard-normal draws where a fraction ``tail_frac`` is ``tail_scale`` wider."""
    g = rng.standard_normal(n)
    if tail_frac > 0:
        g = np.where(rng.random(n) < tail_frac, g * tail_scale, g)
    return g


def event_pairs(obj_evt, counts):
    """(object, item) index pairs of every object with every item of its event; items are grouped by event
    in ``counts``."""
    npair = np.asarray(counts, dtype=np.int64)[obj_evt]
    obj = np.repeat(np.arange(len(obj_evt)), npair)
    item = np.repeat(starts_of(counts)[obj_evt], npair) + ragged_arange(npair)
    return obj, item
