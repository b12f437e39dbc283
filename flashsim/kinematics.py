"""Angle arithmetic shared by features, transforms and the reference detector, and the ΔR-ordered pairs of two
collections (nearest-object features, derived cross-references)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from flashsim.events import group_ranks

__all__ = ["wrap_phi", "delta_phi", "Pairs", "pairs_by_distance"]


def wrap_phi(angle: Any) -> Any:
    """Angles wrapped to [-pi, pi) (numpy or awkward arrays)."""
    wrapped = np.mod(angle + np.pi, 2 * np.pi) - np.pi
    return np.where(wrapped >= np.pi, wrapped - 2 * np.pi, wrapped)


def delta_phi(a: Any, b: Any) -> Any:
    """a - b wrapped to [-pi, pi)."""
    return wrap_phi(a - b)


@dataclass
class Pairs:
    """Every (object, other) pair of an event as flat indices into the two collections, sorted by object then ΔR;
    ``rank`` is the other's place in its object's list (0: the nearest)."""

    object: np.ndarray
    other: np.ndarray
    dr: np.ndarray
    rank: np.ndarray
    n_objects: int

    def nearest(self, rank: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Per object, the flat index of its ``rank``-th nearest other (-1: none) and the ΔR (inf: none)."""
        at = self.rank == rank
        index, dr = np.full(self.n_objects, -1, np.int64), np.full(self.n_objects, np.inf)
        index[self.object[at]], dr[self.object[at]] = self.other[at], self.dr[at]
        return index, dr


def pairs_by_distance(objects: ak.Array, others: ak.Array, exclude_self: bool = False) -> Pairs:
    """The pairs of jagged ``objects`` and ``others`` (fields eta, phi) in the same event, in float64; ``exclude_self``
    leaves out ΔR = 0 (an object paired with itself when both are one collection)."""
    counts, other_counts = (ak.to_numpy(ak.num(c, axis=1)) for c in (objects, others))
    object_event = np.repeat(np.arange(len(counts)), counts)
    per_object = other_counts[object_event]
    pair_object = np.repeat(np.arange(len(object_event)), per_object)
    first_other = (np.cumsum(other_counts) - other_counts)[object_event]
    pair_other = np.repeat(first_other - (np.cumsum(per_object) - per_object), per_object) + np.arange(int(per_object.sum()))
    eta, phi, eta_o, phi_o = (ak.to_numpy(ak.flatten(c[f], axis=None)).astype(np.float64) for c in (objects, others) for f in ("eta", "phi"))
    dr = np.hypot(eta[pair_object] - eta_o[pair_other], delta_phi(phi[pair_object], phi_o[pair_other]))
    if exclude_self:
        keep = dr > 0
        dr, pair_object, pair_other = dr[keep], pair_object[keep], pair_other[keep]
    order, rank, _ = group_ranks(pair_object, len(object_event), within=dr)  # by object, then ΔR (ties: the collection's order)
    return Pairs(pair_object[order], pair_other[order], dr[order], rank, len(object_event))
