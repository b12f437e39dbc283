"""How the three photon units' training sets share refsim's photons (issue 24): for every reco photon, which of
`photon` (GenPart photons), `photon_fromjet` (GenJets) and `photon_fromelectron` (GenPart electrons) trains on it,
by where its genPartIdx points; how often the Electron of the same gen electron (the unit's ``partner``) and the
nearest Electron within dR 0.4 reproduce Photon_electronIdx; and whether Electron_photonIdx is the back-reference
of Photon_electronIdx (crossrefs.PHOTONS_OF_ELECTRONS).

    python benchmarks/photon_sources.py data/refsim2/test_zee.root data/refsim2/test_ttbar.root data/refsim2/test_gjets.root
"""

from __future__ import annotations

import argparse
from itertools import combinations

import awkward as ak
import numpy as np

from flashsim.crossrefs import PHOTONS_OF_ELECTRONS, nearest
from flashsim.datasets import ExtractionReport
from flashsim.events import take
from flashsim.io import read_events
from flashsim.unit import load_unit

UNITS = ("photon", "photon_fromjet", "photon_fromelectron")


def _flat(x: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(x, axis=None))


def partition(events: ak.Array) -> np.ndarray:
    """Per reco photon (flat), a bit per unit of ``UNITS`` whose training set holds it; prints the table."""
    photons = events.Photon
    bits = np.zeros(int(ak.sum(ak.num(photons))), np.int64)
    for k, name in enumerate(UNITS):
        unit = load_unit(name, require_trained=False)
        _, _, partner = unit.kind.row_partners(unit, events, ExtractionReport())
        bits[partner[partner >= 0]] |= 1 << k
    evt = np.repeat(np.arange(len(events)), ak.to_numpy(ak.num(photons)))
    pdg = np.abs(take(_flat(events.GenPart.pdgId), ak.to_numpy(ak.num(events.GenPart)), evt, _flat(photons.genPartIdx), fill=0)[0])
    kinds = {"-> GenPart photon": pdg == 22, "-> GenPart electron": pdg == 11, "genPartIdx -1": pdg == 0}
    print(f"{'photons':22s} {'all':>6s} " + " ".join(f"{n:>19s}" for n in UNITS) + f" {'none':>6s} {'>1 unit':>8s}")
    for label, sel in [("all", np.ones(len(bits), bool)), *kinds.items()]:
        cells = [int(np.sum(sel & (bits >> k & 1 == 1))) for k in range(len(UNITS))]
        several = int(np.sum(sel & (np.bitwise_count(bits) > 1)))
        print(f"{label:22s} {int(sel.sum()):6d} " + " ".join(f"{c:19d}" for c in cells) + f" {int(np.sum(sel & (bits == 0))):6d} {several:8d}")
    for a, b in combinations(range(len(UNITS)), 2):
        both = int(np.sum((bits >> a & 1) & (bits >> b & 1)))
        print(f"in both {UNITS[a]} and {UNITS[b]}: {both}")
    return bits


def electron_links(events: ak.Array, bits: np.ndarray) -> None:
    """Photon_electronIdx of photon_fromelectron's photons against the Electron of the same gen electron and the nearest
    Electron within dR 0.4; Electron_photonIdx against the back-reference of Photon_electronIdx."""
    photons, electrons = events.Photon, events.Electron
    mine = bits >> UNITS.index("photon_fromelectron") & 1 == 1
    truth = _flat(photons.electronIdx)[mine]
    same = electrons.genPartIdx[:, None, :] == photons.genPartIdx[:, :, None]  # photon x electron: the same gen particle
    first = ak.where(ak.any(same, axis=2), ak.argmax(same, axis=2), -1)
    for label, guess in (("the Electron of the same gen electron (partner)", first), ("the nearest Electron, dR < 0.4", nearest(photons, electrons, 0.4))):
        agree = _flat(guess)[mine] == truth
        print(f"Photon_electronIdx is {label}: {agree.mean():.5f} ({int((~agree).sum())} of {len(agree)} differ)")
    counts = ak.to_numpy(ak.num(electrons))
    derived = PHOTONS_OF_ELECTRONS.compute(photons.electronIdx, counts)["photonIdx"]
    print(f"Electron_photonIdx is crossrefs.PHOTONS_OF_ELECTRONS of Photon_electronIdx: {bool(np.all(derived == _flat(electrons.photonIdx)))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    for path in args.files:
        events = read_events([path])
        print(f"\n==== {path}: {len(events)} events, {int(ak.sum(ak.num(events.Photon)))} photons: training sets")
        electron_links(events, partition(events))


if __name__ == "__main__":
    main()
