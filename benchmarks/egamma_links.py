"""How refsim's electrons and photons point to their jet (issue 24), the figures behind the zoo units' ``link``: per
source (a genPartIdx or none), the fraction in a jet, how often the nearest jet within ΔR < max_dr (the link rule,
:func:`flashsim.crossrefs.nearest`) is refsim's ``jetIdx``, the ΔR to and pT of refsim's jet; and whether the shared
back-reference code gives the file's ``Jet_electronIdx1/2`` and ``Jet_nElectrons``.

    python benchmarks/egamma_links.py data/refsim2/test_zee.root data/refsim2/test_ttbar.root data/refsim2/test_gjets.root
"""

from __future__ import annotations

import argparse

import awkward as ak
import numpy as np

from flashsim.crossrefs import ELECTRONS_IN_JETS, nearest
from flashsim.io import read_events
from flashsim.kinematics import delta_phi

MAX_DR = (0.3, 0.4, 0.5)


def _flat(x: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(x, axis=None))


def links(events: ak.Array, collection: str) -> None:
    """One row per source: objects, fraction in a jet, agreement of the nearest-jet rule, refsim's jet's ΔR and pT."""
    objects, jets = events[collection], events.Jet
    own = jets[ak.mask(objects.jetIdx, objects.jetIdx >= 0)]  # refsim's jet (None where it has none)
    dr = _flat(ak.fill_none(np.hypot(objects.eta - own.eta, delta_phi(objects.phi, own.phi)), np.nan))
    pt_ratio = _flat(ak.fill_none(own.pt / objects.pt, np.nan))
    jet_idx = _flat(objects.jetIdx)
    rules = {r: _flat(nearest(objects, jets, r)) for r in MAX_DR}
    unbounded = _flat(nearest(objects, jets, np.inf))
    from_gen = _flat(objects.genPartIdx >= 0)
    print(f"\n{collection}: {'source':16s} {'n':>6s} {'in jet':>7s} " + " ".join(f"{'dR<' + str(r):>7s}" for r in MAX_DR)
          + f" {'nearest':>8s} {'dR 50/90/99/max %ile':>24s} {'jet/obj pT':>10s} {'jet<obj':>8s}")
    for label, mask in (("genPartIdx >= 0", from_gen), ("genPartIdx = -1", ~from_gen), ("all", np.ones_like(from_gen))):
        inside = mask & (jet_idx >= 0)
        agree = " ".join(f"{np.mean(rules[r][mask] == jet_idx[mask]):7.4f}" for r in MAX_DR)
        quantiles = "/".join(f"{q:.3f}" for q in np.quantile(dr[inside], [0.5, 0.9, 0.99, 1.0])) if inside.any() else "-"
        print(f"{'':10s}{label:16s} {int(mask.sum()):6d} {np.mean(jet_idx[mask] >= 0):7.4f} {agree} "
              f"{np.mean(unbounded[inside] == jet_idx[inside]):8.4f} {quantiles:>24s} "
              f"{np.median(pt_ratio[inside]):10.3f} {np.mean(pt_ratio[inside] < 1):8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="refsim GEN+RECO files")
    args = parser.parse_args()
    print("columns: objects; fraction with jetIdx >= 0; fraction whose jetIdx is the nearest jet within dR < r (else -1); "
          "of those in a jet, how often refsim's jet is the nearest jet at all, dR to it, its pT over the object's")
    for path in args.inputs:
        events = read_events([path])
        print(f"\n######## {path}: {len(events)} events")
        for collection in ("Electron", "Photon"):
            links(events, collection)
        derived = ELECTRONS_IN_JETS.compute(events.Electron.jetIdx, ak.to_numpy(ak.num(events.Jet)))
        same = all(np.array_equal(values, _flat(events.Jet[name])) for name, values in derived.items())
        print(f"\nJet_electronIdx1/2, Jet_nElectrons from crossrefs.ELECTRONS_IN_JETS equal the file's: {same}")


if __name__ == "__main__":
    main()
