"""Derivation of the simple jet energy correction table of the parametric detector.

Usage (what produced the defaults in :class:`DetectorParams`): simulate a few thousand
ttbar + W+jets events with the current table, then ``derive_jec(events, params)``
returns the refined ``jec_response`` tuple (one multiplicative iteration of numerical
inversion: mean reco/gen response in gen-pT bins, mapped onto mean reco pT).  Gen-pT
bins start at 30 GeV, well above the raw clustering threshold, so that the threshold
bias does not feed back; the response is extrapolated flat below.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from .detector import jec_response
from .params import DetectorParams

GEN_PT_EDGES = (30.0, 40.0, 50.0, 65.0, 80.0, 120.0, 200.0, 400.0, 1000.0, 5000.0)


def matched_jets(events: ak.Array):
    """Flat (reco pt, reco eta, gen pt) of jets matched to a GenJet."""
    jets = events.Jet
    m = jets.genJetIdx >= 0
    ngen = ak.to_numpy(ak.num(events.GenJet))
    first = np.cumsum(ngen) - ngen
    idx = ak.to_numpy(ak.flatten((jets.genJetIdx + first)[m]))
    gen_pt = ak.to_numpy(ak.flatten(events.GenJet.pt))[idx]
    return (
        ak.to_numpy(ak.flatten(jets.pt[m])).astype(np.float64),
        ak.to_numpy(ak.flatten(jets.eta[m])).astype(np.float64),
        gen_pt.astype(np.float64),
    )


def derive_jec(events: ak.Array, params: DetectorParams, min_jets: int = 30) -> tuple[float, ...]:
    """One iteration of the L2L3 response table from simulated events (see module doc)."""
    pt, eta, gpt = matched_jets(events)
    edges = np.asarray(params.jec_eta_edges)
    nodes = np.asarray(params.jec_pt_nodes)
    old = np.asarray(params.jec_response, dtype=np.float64).reshape(len(edges) - 1, len(nodes))
    new = old.copy()
    for ib in range(len(edges) - 1):
        sel = (np.abs(eta) >= edges[ib]) & (np.abs(eta) < edges[ib + 1])
        xs: list[float] = []
        cs: list[float] = []
        for lo, hi in zip(GEN_PT_EDGES[:-1], GEN_PT_EDGES[1:]):
            s = sel & (gpt >= lo) & (gpt < hi)
            if s.sum() < min_jets:
                continue
            r = pt[s] / gpt[s]
            xs.append(np.log(np.mean(pt[s])))
            cs.append(np.mean(r))
        if not xs:
            continue
        order = np.argsort(xs)
        x_sorted, c_sorted = np.asarray(xs)[order], np.asarray(cs)[order]
        closure = np.interp(np.log(nodes), x_sorted, c_sorted)  # flat extrapolation beyond the ends
        new[ib] = old[ib] * closure
    return tuple(float(round(v, 4)) for v in new.ravel())


__all__ = ["derive_jec", "jec_response", "matched_jets"]
