"""The fourth electron source (issue 24): conversion legs drawn from GenPart photons, pointing to their photon as
refsim's do, merged into Electron. The electron units' training sets partition refsim's electrons by what genPartIdx names."""

from __future__ import annotations

import numpy as np
import pytest

ak = pytest.importorskip("awkward")
pytest.importorskip("pythia8mc")

from flashsim.chain import DEFAULT_CHAIN, Chain  # noqa: E402
from flashsim.crossrefs import nearest  # noqa: E402
from flashsim.datasets import ExtractionReport  # noqa: E402
from flashsim.errors import ChainError  # noqa: E402
from flashsim.events import pointed  # noqa: E402
from flashsim.locations import zoo_dir  # noqa: E402
from flashsim.unit import load_unit  # noqa: E402

NAME = "electron_fromphoton"
CHAIN = ["jet", "fakejet", "electron", NAME, "electron_fromjet", "photon"]


@pytest.fixture(scope="module")
def gjets() -> ak.Array:
    """γ+jets events with their refsim reconstruction (prompt photons convert: genPartFlav 22)."""
    from flashsim.refsim import DetectorParams, generate

    return ak.concatenate(list(generate("gjets", 300, pileup=35.0, seed=9, params=DetectorParams(pu_pool_size=200))))


@pytest.fixture(scope="module")
def flash(gjets) -> ak.Array:
    gen = ak.zip({f: gjets[f] for f in gjets.fields if f not in ("Electron", "Photon", "Jet", "Muon", "MET")}, depth_limit=1)
    return Chain(CHAIN).run(gen, seed=4)


def test_zoo_unit_loads_and_precedes_the_photon_in_the_default_chain() -> None:
    unit = load_unit(NAME)
    assert unit.trained and unit.spec.merge and unit.spec.output == "Electron" and unit.spec.gen_index == "genPartIdx"
    chain = list(DEFAULT_CHAIN)
    assert chain.index("jet") < chain.index("electron") < chain.index(NAME) < chain.index("photon")


def test_training_sets_partition_the_reference_electrons(gjets) -> None:
    """electron takes those pointing to a GenPart electron, electron_fromphoton those pointing to a GenPart photon, the
    from-jet units only those with none (before: conversion legs too, written with genPartIdx -1)."""
    e = gjets.Electron
    pdg = abs(pointed(e.genPartIdx, gjets.GenPart.pdgId))
    ids = np.arange(len(gjets))
    taken = {}
    for name in ("electron", NAME, "electron_fromjet", "electron_fromjet2"):
        unit = load_unit(zoo_dir() / name)
        table = unit.kind.training_rows(unit, gjets, ids, ExtractionReport())
        hit = table["reconstructed"]
        taken[name] = set(zip(table["event_id"][hit].tolist(), np.round(table["tgt.pt"][hit], 4).tolist()))
    expected = {code: set(zip(np.repeat(ids, ak.to_numpy(ak.num(e.pt[pdg == code]))).tolist(),
                              np.round(ak.to_numpy(ak.flatten(e.pt[pdg == code])), 4).tolist())) for code in (11, 22, 0)}
    assert len(expected[22]) > 20, "too few conversion legs to test"
    assert taken["electron"] == expected[11] and taken[NAME] == expected[22]
    from_jets = taken["electron_fromjet"] | taken["electron_fromjet2"]
    assert from_jets and from_jets <= expected[0]


def test_conversion_legs_point_to_their_photon(flash) -> None:
    e, gen = flash.Electron, flash.GenPart
    pdg = abs(pointed(e.genPartIdx, gen.pdgId))
    legs = e[pdg == 22]
    assert ak.sum(ak.num(legs)) > 10 and ak.all(legs.pt > 5) and ak.all(abs(legs.eta) < 2.5)
    assert ak.all(gen.status[legs.genPartIdx] == 1)
    assert set(np.unique(ak.to_numpy(ak.flatten(legs.genPartFlav)))) <= {3, 4, 5, 15, 22}
    assert ak.any(legs.genPartFlav == 22)  # gamma+jets: legs of prompt photons
    assert ak.all(legs.pdgId == -11 * legs.charge) and ak.all(legs.jetIdx == nearest(legs, flash.Jet, 0.4))
    # the from-jet electrons have no gen partner: genPartIdx -1 and genPartFlav 0, as NanoAOD writes an unmatched one
    none = e[pdg == 0]
    assert ak.all(none.genPartIdx == -1) and ak.all(none.genPartFlav == 0)


def test_from_jet_electrons_need_the_electrons_they_see_drawn_first() -> None:
    """electron_fromjet reads the flash electrons with a gen partner in its context: a chain without an earlier
    Electron unit is refused before anything runs."""
    with pytest.raises(ChainError, match=r"unit 'electron_fromjet' reads the Electron earlier units drew in its context; "
                                         r"no earlier unit of the chain produces 'Electron'"):
        Chain(["jet", "electron_fromjet"]).check(["GenJet", "GenPart", "Pileup"])
    Chain(["jet", "electron", "electron_fromjet"]).check(["GenJet", "GenPart", "Pileup"])
