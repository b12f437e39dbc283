"""Cross-references between reco collections that are derived, not drawn, the same way for refsim and the chain:
an object's nearest object of another collection within a ΔR (a unit's ``link``, e.g. ``Electron.jetIdx``), and a
collection's back-references to the objects pointing into it (``Jet.electronIdx1/2``, ``Jet.nElectrons``,
``Electron.photonIdx``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import awkward as ak
import numpy as np

from flashsim.events import group_ranks, pointing
from flashsim.kinematics import pairs_by_distance

__all__ = ["BackReference", "BACK_REFERENCES", "ELECTRONS_IN_JETS", "PHOTONS_OF_ELECTRONS", "nearest", "with_back_references", "derived_fields"]


def nearest(objects: ak.Array, others: ak.Array, max_dr: float) -> ak.Array:
    """Each object's nearest object of ``others`` in its event (local index) within ΔR < ``max_dr``, else -1 (int32)."""
    counts, other_counts = (ak.to_numpy(ak.num(c, axis=1)) for c in (objects, others))
    index, dr = pairs_by_distance(objects, others).nearest()
    first_other = np.repeat(np.cumsum(other_counts) - other_counts, counts)
    return ak.unflatten(np.where((index >= 0) & (dr < max_dr), index - first_other, -1).astype(np.int32), counts)


@dataclass(frozen=True)
class BackReference:
    """Fields of ``target`` naming the first objects of ``source`` whose ``field`` points to each target object (in
    ``source`` order, -1 where fewer) and counting them all (``count``; None: NanoAOD has no such counter)."""

    target: str
    source: str
    field: str
    first: tuple[str, ...]
    count: str | None

    @property
    def fields(self) -> tuple[str, ...]:
        """The target fields written."""
        return (*self.first, self.count) if self.count else self.first

    def compute(self, index: ak.Array, target_counts: np.ndarray) -> dict[str, np.ndarray]:
        """The fields, flat over the target objects (``target_counts`` per event), from the source's jagged ``index``."""
        counts = ak.to_numpy(ak.num(index, axis=1)).astype(np.int64)
        event = np.repeat(np.arange(len(counts)), counts)
        local = np.arange(len(event)) - np.repeat(np.cumsum(counts) - counts, counts)
        pointer = ak.to_numpy(ak.flatten(index)).astype(np.int64)
        inside, _ = pointing(pointer, target_counts[event])
        target = (np.cumsum(target_counts) - target_counts)[event[inside]] + pointer[inside]
        local = local[inside]
        n_target = int(np.sum(target_counts))
        order, rank, count = group_ranks(target, n_target, within=local)  # rank 0: the first source object of a target
        out = {}
        for k, name in enumerate(self.first):
            values = np.full(n_target, -1, np.int32)
            chosen = order[rank == k]
            values[target[chosen]] = local[chosen]
            out[name] = values
        if self.count:
            out[self.count] = count.astype(np.int32)
        return out


ELECTRONS_IN_JETS = BackReference("Jet", "Electron", "jetIdx", ("electronIdx1", "electronIdx2"), "nElectrons")
# refsim's Electron.photonIdx is the photon of the electron's cluster, the one photon whose electronIdx is the electron
PHOTONS_OF_ELECTRONS = BackReference("Electron", "Photon", "electronIdx", ("photonIdx",), None)
BACK_REFERENCES = (ELECTRONS_IN_JETS, PHOTONS_OF_ELECTRONS)


def with_back_references(events: ak.Array, produced: Collection[str], changed: Collection[str]) -> ak.Array:
    """``events`` with the back-references recomputed whose collections are both ``produced`` (by the chain: input
    reco objects point into input collections) and one of which ``changed``; a source without ``field`` gives none."""
    for ref in BACK_REFERENCES:
        if not {ref.target, ref.source} <= set(produced) or not {ref.target, ref.source} & set(changed):
            continue
        if ref.field not in events[ref.source].fields:
            continue
        target = events[ref.target]
        counts = ak.to_numpy(ak.num(target, axis=1))
        for name, values in ref.compute(events[ref.source][ref.field], counts).items():
            target = ak.with_field(target, ak.unflatten(values, counts), name)
        events = ak.with_field(events, target, ref.target)
    return events


def derived_fields(collection: str) -> set[str]:
    """The fields of ``collection`` that back-references derive."""
    return {f for ref in BACK_REFERENCES if ref.target == collection for f in ref.fields}
