"""Flat per-object columns of a detector pass -> pT-ordered NanoAOD collections (awkward, float32 floats)."""

from __future__ import annotations

import awkward as ak
import numpy as np

from ._kin import ragged_arange


def pt_order(evt, pt, keep, n_ev):
    """Output order of the kept objects (by event, then decreasing pT), per-event counts, and every kept
    object's index within its event (-1 for the others)."""
    order = np.lexsort((-pt, evt))
    order = order[keep[order]]
    counts = np.bincount(evt[order], minlength=n_ev).astype(np.int64)
    local = np.full(len(evt), -1, np.int64)
    local[order] = ragged_arange(counts)
    return order, counts, local


def collection(cols: dict[str, np.ndarray], order: np.ndarray, counts: np.ndarray) -> ak.Array:
    """The columns taken in ``order`` (float64 cast to float32), split into events of ``counts`` objects."""
    flat = {}
    for k, v in cols.items():
        v = np.asarray(v)[order]
        flat[k] = v.astype(np.float32) if v.dtype == np.float64 else v
    return ak.unflatten(ak.zip(flat), counts)
