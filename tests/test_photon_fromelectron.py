"""The third photon source (issue 24): photons of electron clusters drawn from GenPart electrons, merged into one Photon
with the `photon` and `photon_fromjet` units, each naming the flash Electron of its gen electron (``partner``), with
Electron.photonIdx derived back from it."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

ak = pytest.importorskip("awkward")
pytest.importorskip("pythia8mc")

from flashsim.chain import DEFAULT_CHAIN, Chain  # noqa: E402
from flashsim.crossrefs import nearest  # noqa: E402
from flashsim.errors import ChainError, UnitError  # noqa: E402
from flashsim.events import pointed  # noqa: E402
from flashsim.locations import zoo_dir  # noqa: E402
from flashsim.unit import UnitSpec, load_unit  # noqa: E402

NAME = "photon_fromelectron"
SPEC = (zoo_dir() / NAME / "unit.toml").read_text()
PARTNER = 'partner = { field = "electronIdx", collection = "Electron" }'
E_GAMMA = ["jet", "fakejet", "electron", "electron_fromjet", "photon", "photon_fromjet", NAME]


@pytest.fixture(scope="module")
def zee_gen() -> ak.Array:
    from flashsim.refsim import DetectorParams, generate

    return ak.concatenate(list(generate("zee", 60, pileup=35.0, seed=7, gen_only=True, params=DetectorParams(pu_pool_size=200))))


@pytest.fixture(scope="module")
def flash(zee_gen) -> ak.Array:
    return Chain(E_GAMMA).run(zee_gen, seed=2)


def test_zoo_unit_loads_and_is_in_the_default_chain() -> None:
    unit = load_unit(NAME)
    assert unit.trained and unit.spec.merge and unit.spec.output == "Photon" and NAME in DEFAULT_CHAIN
    assert unit.spec.partner is not None and {"Electron", "Jet", "GenPart"} <= unit.spec.inputs
    assert "Photon_electronIdx" in unit.spec.reco_branches
    photon = UnitSpec.load(zoo_dir() / "photon" / "unit.toml")
    # the photon unit's targets and transforms, but for genPartFlav: 11 (a prompt electron's cluster) where a photon's is 1
    others = lambda targets: [t for t in targets if t.get("column") != "genPartFlav"]  # noqa: E731
    assert others(unit.spec.targets) == others(photon.targets) and unit.spec.target_columns == photon.target_columns


@pytest.mark.parametrize(("old", "new", "message"), [
    (PARTNER, PARTNER.replace("electronIdx", "genPartIdx"), r"'genPartIdx' is not a cross-reference into 'Electron'"),
    (PARTNER, PARTNER.replace('collection = "Electron"', 'collection = "Electron", max_dr = 0.1'), r"partner\.max_dr: unknown key"),
    (PARTNER, 'partner = { field = "photonIdx", collection = "Photon" }', r"partner\.collection: the unit's own output 'Photon'"),
    ("mvaID_WP90 = 0 }", "mvaID_WP90 = 0, electronIdx = -1 }", r"Photon_electronIdx is written by the partner"),
    ('gen_index = "genPartIdx"', 'match = { through = ["Photon.genPartIdx"] }', r"partner: needs gen_index"),
])
def test_spec_refuses_bad_partners(old: str, new: str, message: str) -> None:
    assert SPEC.count(old) == 1
    with pytest.raises(UnitError, match=message):
        UnitSpec.from_dict(tomllib.loads(SPEC.replace(old, new)))


def test_chain_without_electron_is_refused_by_name(zee_gen) -> None:
    with pytest.raises(ChainError, match=r"unit 'photon_fromelectron' sets Photon_electronIdx to the Electron of the same GenPart "
                                         r"\(partner\.collection\); no earlier unit of the chain produces 'Electron'"):
        Chain(["jet", NAME]).check(zee_gen.fields)
    unit, jets = load_unit(NAME), Chain(["jet"]).run(zee_gen, seed=2)
    with pytest.raises(ChainError, match=r"partner\.collection 'Electron' \(for Photon_electronIdx\) needs Electron_genPartIdx"):
        unit.run(jets, seed=2)


def test_photons_of_electrons_follow_their_gen_electrons(flash) -> None:
    ph = flash.Photon
    mine = ph[abs(flash.GenPart.pdgId[ph.genPartIdx]) == 11]
    assert ak.sum(ak.num(mine)) > 30 and ak.all(mine.pt > 10) and ak.all(abs(mine.eta) < 2.51)
    gen = flash.GenPart[mine.genPartIdx]
    assert ak.all(gen.status == 1) and abs(np.median(ak.to_numpy(ak.flatten(mine.pt / gen.pt))) - 1) < 0.1
    assert ak.all(mine.mvaID_WP80 == (mine.mvaID > 0.88)) and ak.all(mine.isScEtaEB == (abs(mine.eta) < 1.4442))
    assert set(np.unique(ak.to_numpy(ak.flatten(mine.genPartFlav)))) <= {0, 11}


def test_three_sources_merge_into_one_photon_with_consistent_references(flash) -> None:
    """One pt-ordered Photon; electronIdx is the Electron of the same gen electron (-1 for the other sources and where the
    electron units drew none); Electron.photonIdx is its back-reference; jetIdx a flash Jet."""
    ph, e = flash.Photon, flash.Electron
    assert ak.all(ph.pt[:, 1:] <= ph.pt[:, :-1])
    source = abs(pointed(ph.genPartIdx, flash.GenPart.pdgId))
    # from electrons and photons; photon_fromjet's (no gen partner, source 0) are too rare in 60 Z -> ee events to require
    assert {11, 22} <= {int(s) for s in np.unique(ak.to_numpy(ak.flatten(source)))} <= {0, 11, 22}
    assert ak.all(ph.electronIdx[source != 11] == -1)
    same_gen = e.genPartIdx[:, None, :] == ph.genPartIdx[:, :, None]
    expected = ak.where((source == 11) & ak.any(same_gen, axis=2), ak.argmax(same_gen, axis=2), -1)
    assert ak.all(ph.electronIdx == expected) and ak.sum(ph.electronIdx >= 0) > 30
    linked = ph.electronIdx >= 0
    assert ak.all(e.genPartIdx[ph.electronIdx[linked]] == ph.genPartIdx[linked])
    # the back-reference: each electron names the photon pointing to it
    assert ak.sum(e.photonIdx >= 0) == ak.sum(linked)
    assert ak.all(ph.electronIdx[e.photonIdx[e.photonIdx >= 0]] == ak.local_index(e)[e.photonIdx >= 0])
    from_gen = ph[ph.genPartIdx >= 0]
    assert ak.all(from_gen.jetIdx == nearest(from_gen, flash.Jet, 0.4))
    assert ak.all(ph.jetIdx < ak.num(flash.Jet)) and ak.all(ph.jetIdx >= -1)
