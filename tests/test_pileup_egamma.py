"""The zoo's pileup electrons and photons (fakeelectron, fakephoton): multiplicity units conditioned on the pileup,
merged into Electron and Photon with no generator partner, at refsim's rate per event, linked to the nearest jet."""

from __future__ import annotations

import numpy as np
import pytest

ak = pytest.importorskip("awkward")

from flashsim.chain import DEFAULT_CHAIN  # noqa: E402
from flashsim.crossrefs import nearest  # noqa: E402
from flashsim.locations import zoo_dir  # noqa: E402
from flashsim.unit import load_unit  # noqa: E402

N_EVENTS = 4000
# refsim's unmatched objects per event in its two min-bias samples over 100k-event pools (<nPU> 35, 40k events):
# electrons 0.093 (3,738), photons 0.033 (1,330); the band is about 5 binomial sigmas of the draw around them
RATES = {"fakeelectron": (0.093, 0.016), "fakephoton": (0.033, 0.010)}


@pytest.fixture(scope="module")
def events() -> ak.Array:
    """Events at pileup 35 with a few jets."""
    rng = np.random.default_rng(4)
    n_jets = rng.integers(0, 6, N_EVENTS)
    jets = ak.unflatten(ak.zip({"pt": rng.uniform(15, 200, n_jets.sum()), "eta": rng.uniform(-2.5, 2.5, n_jets.sum()),
                                "phi": rng.uniform(-np.pi, np.pi, n_jets.sum())}), n_jets)
    return ak.zip({"run": np.ones(N_EVENTS, np.uint32), "luminosityBlock": np.ones(N_EVENTS, np.uint32),
                   "event": np.arange(1, N_EVENTS + 1, dtype=np.uint64),
                   "Pileup": ak.zip({"nTrueInt": rng.poisson(35, N_EVENTS).astype(np.float32),
                                     "nPU": rng.poisson(35, N_EVENTS).astype(np.int32)}),
                   "Jet": jets}, depth_limit=1)


def _flat(x: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(x, axis=None))


@pytest.mark.parametrize("name", ["fakeelectron", "fakephoton"])
def test_in_the_default_chain_after_the_jets_and_their_collection(name: str) -> None:
    chain = list(DEFAULT_CHAIN)
    first = "electron" if name == "fakeelectron" else "photon"
    assert chain.index("jet") < chain.index(first) < chain.index(name) < chain.index("met")


@pytest.mark.parametrize("name", ["fakeelectron", "fakephoton"])
def test_pileup_objects_at_the_reference_rate_with_no_gen_partner(events, name: str) -> None:
    unit = load_unit(zoo_dir() / name)
    out = unit.run(events, seed=5)
    collection = unit.spec.output
    drawn = out[collection]
    assert ak.all(drawn.pt[:, 1:] <= drawn.pt[:, :-1])  # pt-ordered
    rate, sigma = RATES[name]
    per_event = float(ak.sum(ak.num(drawn))) / N_EVENTS
    assert abs(per_event - rate) < sigma, f"{name}: {per_event:.4f} per event against refsim's {rate}"
    assert ak.all(drawn.genPartFlav == 0) and ak.all(drawn.genPartIdx == -1)
    threshold = 5 if collection == "Electron" else 10
    assert ak.all(drawn.pt > threshold) and ak.all(abs(drawn.eta) < 2.51)
    assert ak.all(drawn.jetIdx == nearest(drawn, out.Jet, 0.4)) and ak.any(drawn.jetIdx >= 0)


def test_pileup_electrons_carry_the_conversion_and_fake_signature(events) -> None:
    """refsim's pileup electrons are conversion legs and hadron fakes: 68 % fail the conversion veto, 91 % have lost
    hits, 9 % pass a cut-based ID (the prompt electrons of Z -> ee: 1 %, 5 %, 92 %)."""
    e = load_unit(zoo_dir() / "fakeelectron").run(events, seed=6).Electron
    e = e[e.genPartIdx < 0]
    assert ak.all(e.pdgId == -11 * e.charge)
    assert ak.all(e.mvaFall17V2Iso_WP80 == (e.mvaFall17V2Iso > 0.5)) and ak.all(e.mvaFall17V2Iso_WP90 == (e.mvaFall17V2Iso > 0.12))
    assert 0.5 < np.mean(_flat(e.convVeto) == 0) < 0.8
    assert np.mean(_flat(e.lostHits) > 0) > 0.75 and np.mean(_flat(e.cutBased) > 0) < 0.2


def test_pileup_photons_follow_the_ecal_regions(events) -> None:
    ph = load_unit(zoo_dir() / "fakephoton").run(events, seed=7).Photon
    ph = ph[ph.genPartIdx < 0]
    aeta = abs(ph.eta)
    assert ak.all(ph.isScEtaEB == (aeta < 1.4442)) and ak.all(ph.isScEtaEE == ((aeta > 1.566) & (aeta < 2.5)))
    assert ak.all(ph.mvaID_WP80 == (ph.mvaID > 0.88)) and ak.all(ph.electronIdx == -1)
