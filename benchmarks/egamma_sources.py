"""Which reco electrons and photons a GenPart-sourced unit does not cover (genPartIdx < 0, or pointing to a
particle of another kind), by genPartFlav, and how many of those lie in a reco jet with a GenJet: the table
that decides the sources of the e/gamma units (issue 24).

    python benchmarks/egamma_sources.py data/refsim2/train_ttbar.root data/refsim2/train_wjets.root
"""

from __future__ import annotations

import argparse
from collections import Counter

import awkward as ak
import numpy as np
import uproot

from flashsim.events import from_branches, take

KINDS = {"Electron": 11, "Photon": 22}


def _flat(x: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(x, axis=None))


def table(events: ak.Array, collection: str) -> None:
    """Print, per genPartFlav, the objects not matched to a GenPart of their kind, and how many are in a jet with a GenJet."""
    reco, gen, jets = events[collection], events.GenPart, events.Jet
    evt = np.repeat(np.arange(len(events)), ak.to_numpy(ak.num(reco)))
    idx = _flat(reco.genPartIdx)
    pid = np.abs(take(_flat(gen.pdgId), ak.to_numpy(ak.num(gen)), evt, idx)[0])
    matched = (idx >= 0) & (pid == KINDS[collection])
    jet_idx = _flat(reco.jetIdx)
    jet_f = jet_idx >= 0
    gj = take(_flat(jets.genJetIdx), ak.to_numpy(ak.num(jets)), evt, jet_idx)[0]
    gj_f = jet_f & (gj >= 0)
    kind_f = np.where(idx < 0, -1, np.where(matched, 0, pid))  # -1 no GenPart, 0 own kind, else the other kind's |pdgId|
    flav = _flat(reco.genPartFlav)
    n = len(flav)
    print(f"\n{collection}: {n} reco objects, {int((kind_f == 0).sum())} matched to a GenPart {collection.lower()}; not matched:")
    print(f"{'genPartFlav':>11} {'genPartIdx':>14} {'count':>7} {'in a jet':>9} {'jet w/ GenJet':>14}")
    for (f, k), c in sorted(Counter(zip(flav[kind_f != 0].tolist(), kind_f[kind_f != 0].tolist())).items()):
        sel = (flav == f) & (kind_f == k)
        what = "-1" if k == -1 else f"-> |pdgId| {k}"
        print(f"{f:>11} {what:>14} {c:>7} {int(jet_f[sel].sum()):>9} {int(gj_f[sel].sum()):>14}")
    unm = kind_f != 0
    print(f"{'all':>11} {'':>14} {int(unm.sum()):>7} {int(jet_f[unm].sum()):>9} {int(gj_f[unm].sum()):>14}")
    # GenJets holding two or more unmatched objects (through Jet_genJetIdx)
    n_gj = ak.to_numpy(ak.num(events.GenJet))
    key = (np.r_[0, np.cumsum(n_gj)][:-1][evt] + gj)[unm & gj_f]
    counts = np.bincount(key, minlength=int(n_gj.sum()))
    print(f"GenJets with >= 1 such object: {int((counts >= 1).sum())}, with >= 2: {int((counts >= 2).sum())} "
          f"(of {int(n_gj.sum())} GenJets)")
    for cut in (10, 15, 20):
        gpt = _flat(events.GenJet.pt)
        print(f"  GenJet pt > {cut}: {int((gpt > cut).sum())} GenJets, holding {int(((counts >= 1) & (gpt > cut)).sum())}; "
              f"unmatched objects in GenJets below {cut} GeV: {int(counts[gpt <= cut].sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    for path in args.files:
        tree = uproot.open(path)["Events"]
        names = [k for k in tree.keys() if k.split("_")[0] in ("Electron", "Photon", "Jet", "GenJet", "GenPart", "nElectron", "nPhoton", "nJet", "nGenJet", "nGenPart")]
        events = from_branches(tree.arrays(names, library="ak", how=dict))
        print(f"==== {path}: {len(events)} events")
        for collection in KINDS:
            table(events, collection)


if __name__ == "__main__":
    main()
