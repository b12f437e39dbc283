"""Batch anti-kt clustering through fastjet's awkward interface, returned as flat arrays."""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

from ._kin import ragged_arange
from .pythia import quiet_stdout

_JETDEFS: dict[float, object] = {}


def _jetdef(r: float):
    import fastjet

    if r not in _JETDEFS:
        _JETDEFS[r] = fastjet.JetDefinition(fastjet.antikt_algorithm, r)
    return _JETDEFS[r]


@dataclass
class FlatJets:
    """Clustered jets of a batch, pT-ordered within each event, as flat columns."""

    counts: np.ndarray  # jets per event
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    const_counts: np.ndarray  # constituents per jet
    const_index: np.ndarray  # global (batch-flat) input index of each constituent, grouped by jet

    @property
    def pt(self) -> np.ndarray:
        return np.hypot(self.px, self.py)

    @property
    def jet_of_const(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.px)), self.const_counts)


def cluster(px, py, pz, e, counts, r: float, min_pt: float) -> FlatJets:
    """anti-kt(R) on a batch given flat input columns and per-event counts."""
    import fastjet

    counts = np.asarray(counts, dtype=np.int64)
    n_ev = len(counts)
    flat = ak.zip(
        {
            "px": np.asarray(px, dtype=np.float64),
            "py": np.asarray(py, dtype=np.float64),
            "pz": np.asarray(pz, dtype=np.float64),
            "E": np.asarray(e, dtype=np.float64),
        }
    )
    events = ak.unflatten(flat, counts)
    with quiet_stdout():
        cs = fastjet.ClusterSequence(events, _jetdef(float(r)))
        jets = cs.inclusive_jets(min_pt=min_pt)
        cidx = cs.constituent_index(min_pt=min_pt)
    njet = ak.to_numpy(ak.num(jets)).astype(np.int64)
    jpx = ak.to_numpy(ak.flatten(jets.px)).astype(np.float64)
    jpy = ak.to_numpy(ak.flatten(jets.py)).astype(np.float64)
    jpz = ak.to_numpy(ak.flatten(jets.pz)).astype(np.float64)
    je = ak.to_numpy(ak.flatten(jets.E)).astype(np.float64)
    ccount = ak.to_numpy(ak.flatten(ak.num(cidx, axis=2))).astype(np.int64)
    cloc = ak.to_numpy(ak.flatten(cidx, axis=None)).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n_ev else np.zeros(0, np.int64)
    jet_event = np.repeat(np.arange(n_ev), njet)
    cglob = cloc + np.repeat(starts[jet_event], ccount)

    # pT-order jets within each event (fastjet's inclusive_jets is not sorted)
    pt = np.hypot(jpx, jpy)
    order = np.lexsort((-pt, jet_event))
    cstart = np.concatenate([[0], np.cumsum(ccount)[:-1]])
    new_cc = ccount[order]
    sel = np.repeat(cstart[order], new_cc) + ragged_arange(new_cc)
    return FlatJets(
        counts=njet,
        px=jpx[order],
        py=jpy[order],
        pz=jpz[order],
        e=je[order],
        const_counts=new_cc,
        const_index=cglob[sel],
    )

