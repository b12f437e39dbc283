"""Derived cross-references (issue 24): a unit's ``link`` (each drawn object's nearest object of an earlier collection
within a ΔR), the jet's back-references to its electrons as refsim writes them, kept consistent through merges,
typed per NanoAOD version, and a chain lacking the linked collection refused by name."""

from __future__ import annotations

import tomllib

import awkward as ak
import numpy as np
import pytest

from flashsim.chain import Chain
from flashsim.crossrefs import ELECTRONS_IN_JETS, nearest, with_back_references
from flashsim.errors import ChainError, UnitError
from flashsim.events import pointed
from flashsim.io.schema import nano_version
from flashsim.io.writer import typed_branches
from flashsim.locations import zoo_dir
from flashsim.spec import UnitSpec
from flashsim.unit import attach, load_unit

JETS = ak.Array([
    [{"pt": 80.0, "eta": 0.0, "phi": 3.1}, {"pt": 40.0, "eta": 1.0, "phi": 0.0}, {"pt": 20.0, "eta": 1.2, "phi": 0.0}],
    [{"pt": 30.0, "eta": -1.0, "phi": 1.0}],
    [],
])


def _electrons(rows: list[list[tuple[float, float, float, int]]]) -> ak.Array:
    return ak.Array([[{"pt": pt, "eta": eta, "phi": phi, "jetIdx": j} for pt, eta, phi, j in event] for event in rows])


def test_nearest_within_max_dr_else_none():
    objects = ak.Array([
        [{"eta": 0.0, "phi": -3.1},    # 0.08 from jet 0 across the phi wrap
         {"eta": 1.15, "phi": 0.0},    # 0.15 from jet 1, 0.05 from jet 2: the nearest wins
         {"eta": 1.0, "phi": 0.5}],    # 0.5 from jet 1: beyond max_dr
        [{"eta": -1.0, "phi": 1.39}],  # 0.39 from the only jet: within
        [{"eta": 0.0, "phi": 0.0}],    # no jets at all
    ])
    assert nearest(objects, JETS, 0.4).tolist() == [[0, 2, -1], [0], [-1]]
    assert nearest(objects, JETS, 0.1).tolist() == [[0, 2, -1], [-1], [-1]]
    assert nearest(objects, JETS, 0.4).layout.content.dtype == np.int32


def test_back_references_name_the_first_two_electrons_and_count_all():
    electrons = _electrons([
        [(50, 0, 0, 1), (40, 0, 0, -1), (30, 0, 0, 1), (20, 0, 0, 0), (10, 0, 0, 1)],  # three in jet 1, one in jet 0
        [(25, 0, 0, 0), (15, 0, 0, 0)],                                                 # two in the only jet
        [(9, 0, 0, -1)],
    ])
    out = ELECTRONS_IN_JETS.compute(electrons.jetIdx, ak.to_numpy(ak.num(JETS)))
    assert out["electronIdx1"].tolist() == [3, 0, -1, 0]
    assert out["electronIdx2"].tolist() == [-1, 2, -1, 1]  # the third electron of jet 1 has no index
    assert out["nElectrons"].tolist() == [1, 3, 0, 2]


def _consistent(events: ak.Array) -> None:
    """Every jet names its first two electrons (in the electrons' order) and counts all whose jetIdx is that jet."""
    for jets, electrons in zip(events.Jet.tolist(), events.Electron.tolist()):
        for j, jet in enumerate(jets):
            inside = [i for i, e in enumerate(electrons) if e["jetIdx"] == j]
            assert [jet["electronIdx1"], jet["electronIdx2"], jet["nElectrons"]] == [*(inside + [-1, -1])[:2], len(inside)]


def test_back_references_follow_merges_and_resorting():
    events = ak.zip({"Jet": JETS, "Electron": _electrons([[(30, 1.0, 0, 1), (10, 1.2, 0, 2)], [(12, -1, 1, 0)], []])}, depth_limit=1)
    events = with_back_references(events, {"Jet", "Electron"}, {"Electron"})
    _consistent(events)
    # a second source merges electrons that sort between and before the first ones
    events = attach(events, "Electron", _electrons([[(20, 1.0, 0.1, 1), (5, 0, 3.1, 0)], [(40, -1, 1, 0)], [(7, 0, 0, -1)]]), merge=True)
    events = with_back_references(events, {"Jet", "Electron"}, {"Electron"})
    assert events.Electron.pt.tolist() == [[30, 20, 10, 5], [40, 12], [7]]
    assert events.Jet.electronIdx1.tolist() == [[3, 0, 2], [0], []] and events.Jet.nElectrons.tolist() == [[1, 2, 1], [2], []]
    _consistent(events)
    # more jets merged into Jet (without the derived fields) re-sort it: electrons follow, the back-references are redone
    fakes = ak.Array([[{"pt": 50.0, "eta": 2.0, "phi": 2.0}], [], []])
    events = attach(events, "Jet", fakes, merge=True)
    assert events.Electron.jetIdx.tolist() == [[2, 2, 3, 0], [0, 0], [-1]]
    events = with_back_references(events, {"Jet", "Electron"}, {"Jet"})
    _consistent(events)


def test_back_references_only_between_collections_the_chain_produced():
    events = ak.zip({"Jet": JETS, "Electron": _electrons([[(30, 1.0, 0, 1)], [], []])}, depth_limit=1)
    assert "nElectrons" not in with_back_references(events, {"Jet"}, {"Jet"}).Jet.fields  # Electron from the input
    assert "nElectrons" not in with_back_references(events, {"Jet", "Electron"}, {"Muon"}).Jet.fields  # neither changed


@pytest.mark.parametrize(("version", "index", "count"), [("v9", np.int32, np.int32), ("v12", np.int16, np.uint8),
                                                          ("v15", np.int16, np.uint8)])
def test_written_with_the_types_of_the_version(version, index, count):
    events = ak.zip({"Jet": JETS, "Electron": _electrons([[(30, 1.0, 0, 1), (10, 1.2, 0, 1)], [], []])}, depth_limit=1)
    branches = typed_branches(with_back_references(events, {"Jet", "Electron"}, {"Electron"}), nano_version(version))
    for name, dtype in (("Jet_electronIdx1", index), ("Jet_electronIdx2", index), ("Jet_nElectrons", count), ("Electron_jetIdx", index)):
        assert branches[name].layout.content.dtype == dtype, name
    assert branches["Jet_electronIdx2"].tolist() == [[-1, 1, -1], [-1], []]


ELECTRON_SPEC = (zoo_dir() / "electron" / "unit.toml").read_text()
LINK = 'link = { field = "jetIdx", collection = "Jet", max_dr = 0.4 }'


@pytest.mark.parametrize(("old", "new", "message"), [
    ("max_dr = 0.4", "max_d = 0.4", r"link\.max_d: unknown key 'max_d' \(did you mean 'max_dr'\?\)"),
    ('field = "jetIdx"', 'field = "genJetIdx"', r"'genJetIdx' is not a cross-reference into 'Jet' \(NanoAOD names those 'jetIdx'\)"),
    ("max_dr = 0.4", "max_dr = 0", r"link\.max_dr: Input should be greater than 0"),
    ('field = "jetIdx", collection = "Jet"', 'field = "electronIdx", collection = "Electron"', r"the unit's own output 'Electron'"),
    ("mvaFall17V2Iso_WP90 = 0 }", "mvaFall17V2Iso_WP90 = 0, jetIdx = -1 }", r"Electron_jetIdx is written by the link"),
])
def test_spec_refuses_bad_links(old, new, message):
    assert LINK in ELECTRON_SPEC and ELECTRON_SPEC.count(old) == 1
    with pytest.raises(UnitError, match=message):
        UnitSpec.from_dict(tomllib.loads(ELECTRON_SPEC.replace(old, new)))


def test_zoo_units_link_jet_and_need_it_earlier_in_the_chain():
    for name in ("electron", "photon"):
        spec = UnitSpec.load(zoo_dir() / name / "unit.toml")
        assert spec.link is not None and (spec.link.field, spec.link.collection, spec.link.max_dr) == ("jetIdx", "Jet", 0.4)
        assert "jetIdx" not in spec.constants and "Jet" in spec.inputs and f"{spec.output}_jetIdx" in spec.reco_branches
    unit = load_unit("electron")
    with pytest.raises(ChainError, match=r"unit 'electron' links Electron_jetIdx to the nearest Jet \(link\.collection\); "
                                         r"no earlier unit of the chain produces 'Jet'"):
        Chain([unit]).check(["GenPart", "GenJet", "Pileup", "Jet"])  # an input Jet (full simulation) is not the chain's
    with pytest.raises(ChainError, match=r"unit 'electron': link\.collection 'Jet' \(for Electron_jetIdx\) needs Jet_eta"):
        unit.linked(ak.zip({"GenPart": JETS}, depth_limit=1), _electrons([[], [], []]))


def test_pointed_gives_the_named_objects_values_and_the_fill_for_none() -> None:
    gen_pdg = ak.Array([[11, 22, -11], [], [13]])
    index = ak.Array([[2, -1, 0], [-1], []])
    assert pointed(index, gen_pdg).tolist() == [[-11, 0, 11], [0], []]
    assert pointed(index, gen_pdg, fill=-99).tolist() == [[-11, -99, 11], [-99], []]
