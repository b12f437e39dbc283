"""Object units sourced on GenJet whose reco partner is found through a chain of cross-references
(``Electron.jetIdx`` -> ``Jet.genJetIdx``): the spec keys, the training rows, and the merge into the output."""

from __future__ import annotations

import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from conftest import synthetic_events, write_recipe, write_unit
from flashsim.chain import Chain
from flashsim.datasets import ExtractionReport
from flashsim.errors import ChainError, InputError, UnitError
from flashsim.io import write_events
from flashsim.kinds import _back_through
from flashsim.spec import UnitSpec
from flashsim.unit import attach, load_unit

FROMJET_UNIT = """
name = "tinyfromjet"
format_version = 1
type = "object"
output = "Electron"
merge = true
constants = { genPartIdx = -1 }
source = { collection = "GenJet", selection = "pt > 10" }
match = { through = ["Electron.jetIdx", "Jet.genJetIdx"], selection = "abs(GenPart.pdgId) != 11" }
context = [
  { field = "pt", steps = [{ type = "log" }, { type = "standardize" }] },
  { field = "eta" },
  { event = "Pileup.nTrueInt" },
]
targets = [
  { column = "pt", steps = [{ type = "log_ratio", reference = "pt" }, { type = "standardize" }] },
  { column = "eta", steps = [{ type = "difference", reference = "eta" }, { type = "standardize" }] },
]
model = { type = "coupling_rqs", layers = 2, hidden = 16, blocks = 1, bins = 4 }
efficiency = { hidden = 16, layers = 2 }
"""


def _spec(text: str) -> UnitSpec:
    import tomllib

    return UnitSpec.from_dict(tomllib.loads(text))


@pytest.mark.parametrize(("old", "new", "message"), [
    ("match = { through", "match = { throuhg", r"match\.throuhg: unknown key 'throuhg' \(did you mean 'through'\?\)"),
    ("selection = \"abs(GenPart", "selectoin = \"abs(GenPart", r"match\.selectoin: unknown key 'selectoin' \(did you mean 'selection'\?\)"),
    ('"Electron.jetIdx", ', '"Electron_jetIdx", ', r"'Electron_jetIdx' is not 'Collection\.field'"),
    ('["Electron.jetIdx", "Jet.genJetIdx"]', '["Jet.genJetIdx"]', r"must be a field of the output collection 'Electron'"),
    ("merge = true", 'merge = true\ngen_index = "genPartIdx"', "gen_index and match both say"),
    ("constants = { genPartIdx = -1 }", "constants = { jetIdx = -1 }", r"Electron_jetIdx is the cross-reference the unit writes"),
    ("abs(GenPart.pdgId) != 11", "GenPart.pdgId.x != 11", "only name.field may be read"),
])
def test_spec_refuses_bad_match_keys(old, new, message):
    assert old in FROMJET_UNIT
    with pytest.raises(UnitError, match=message):
        _spec(FROMJET_UNIT.replace(old, new))


def test_other_kinds_refuse_match():
    text = FROMJET_UNIT.replace('type = "object"', 'type = "event"').replace('source = { collection = "GenJet", selection = "pt > 10" }\n', "")
    text = text.replace("constants = { genPartIdx = -1 }\n", "").replace("efficiency = { hidden = 16, layers = 2 }\n", "")
    with pytest.raises(UnitError, match=r"\['match'\] are not used by event units"):
        _spec(text)


def _jagged(rows: list[list[dict]], fields: dict[str, type]) -> ak.Array:
    counts = [len(r) for r in rows]
    return ak.zip({f: ak.unflatten(np.array([o[f] for r in rows for o in r], dtype=t), counts) for f, t in fields.items()})


def _hand_built() -> ak.Array:
    """Three events: electrons in jets with and without a GenJet, one a GenPart electron (not this unit's),
    a conversion (to a GenPart photon), two in one jet, and two out-of-range indices."""
    gen_jet = _jagged([[{"pt": 50.0, "eta": 0.1}, {"pt": 40.0, "eta": 1.0}, {"pt": 30.0, "eta": -1.0}],
                       [{"pt": 25.0, "eta": 0.0}],
                       [{"pt": 60.0, "eta": 2.0}, {"pt": 15.0, "eta": -2.0}]], {"pt": np.float32, "eta": np.float32})
    jet = _jagged([[{"genJetIdx": 1}, {"genJetIdx": -1}, {"genJetIdx": 0}], [], [{"genJetIdx": 5}]], {"genJetIdx": np.int32})
    gen_part = _jagged([[{"pdgId": 11}, {"pdgId": 22}], [], []], {"pdgId": np.int32})
    electron = _jagged([
        [{"pt": 20.0, "eta": 1.1, "jetIdx": 0, "genPartIdx": -1},   # GenJet 1: its partner
         {"pt": 18.0, "eta": 0.1, "jetIdx": 2, "genPartIdx": 0},    # GenJet 0, but a GenPart electron's: not this unit's
         {"pt": 8.0, "eta": 0.2, "jetIdx": 2, "genPartIdx": 1},     # GenJet 0: a conversion, its partner
         {"pt": 7.0, "eta": 0.5, "jetIdx": 1, "genPartIdx": -1},    # a jet with no GenJet
         {"pt": 6.0, "eta": 0.9, "jetIdx": 0, "genPartIdx": -1}],   # GenJet 1's second: the first is the partner
        [{"pt": 9.0, "eta": 0.0, "jetIdx": 3, "genPartIdx": -1}],   # jetIdx past the (empty) Jet collection
        [{"pt": 9.0, "eta": 2.1, "jetIdx": 0, "genPartIdx": -1}],   # its jet's genJetIdx past GenJet
    ], {"pt": np.float32, "eta": np.float32, "jetIdx": np.int32, "genPartIdx": np.int32})
    pileup = ak.zip({"nTrueInt": np.full(3, 30.0, np.float32)}, depth_limit=1)
    return ak.zip({"GenJet": gen_jet, "Jet": jet, "GenPart": gen_part, "Electron": electron, "Pileup": pileup}, depth_limit=1)


def test_training_rows_pair_each_genjet_with_its_electron_through_the_chain(tmp_path: Path):
    unit = load_unit(write_unit(tmp_path / "u", FROMJET_UNIT), require_trained=False)
    report = ExtractionReport()
    table = unit.kind.training_rows(unit, _hand_built(), np.arange(3), report)
    assert list(table["event_id"]) == [0, 0, 0, 1, 2, 2]
    assert list(table["reconstructed"]) == [True, True, False, False, False, False]
    assert list(table["tgt.pt"][:2]) == [8.0, 20.0]
    assert list(table["ref.pt"][:2]) == [50.0, 40.0]  # relative to the GenJet reached
    assert report.dangling_index == 2 and report.shared_partner == 1


def test_drawn_objects_point_to_the_flash_jet_of_their_genjet():
    events = _hand_built()
    hops = [("Electron", "jetIdx"), ("Jet", "genJetIdx")]
    # GenJets 0, 1, 2 of event 0 and GenJet 0 of events 1 and 2
    index = _back_through(events, hops, "GenJet", np.array([0, 0, 0, 1, 2]), np.array([0, 1, 2, 0, 0]))
    assert list(index) == [2, 0, -1, -1, -1]
    assert list(_back_through(events, hops[:1], "GenJet", np.array([0, 2]), np.array([2, 1]))) == [2, 1]


def test_merging_renumbers_references_into_the_merged_collection():
    events = ak.zip({
        "Electron": ak.zip({"pt": [[30.0, 10.0], [5.0]], "jetIdx": [[0, -1], [0]]}),
        "Photon": ak.zip({"pt": [[31.0, 9.0], [20.0]], "electronIdx": [[0, 1], [-1]]}),
        "Jet": ak.zip({"pt": [[40.0], [30.0]], "electronIdx1": [[0], [0]], "electronIdx2": [[1], [-1]]}),
    }, depth_limit=1)
    new = ak.zip({"pt": [[20.0], [7.0]], "jetIdx": [[-1], [0]]})
    merged = attach(events, "Electron", new, merge=True)
    assert merged.Electron.pt.tolist() == [[30.0, 20.0, 10.0], [7.0, 5.0]]
    assert merged.Photon.electronIdx.tolist() == [[0, 2], [-1]]  # the 10 GeV electron moved to position 2
    assert merged.Jet.electronIdx1.tolist() == [[0], [1]] and merged.Jet.electronIdx2.tolist() == [[2], [-1]]
    for event in range(2):  # every reference still names the electron it named
        for before, after in zip(events.Photon.electronIdx[event], merged.Photon.electronIdx[event]):
            assert before == after == -1 or events.Electron.pt[event][before] == merged.Electron.pt[event][after]


@pytest.fixture(scope="module")
def fromjet_unit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny unit trained for a few epochs on synthetic events with electrons in 40 % of the matched jets."""
    from flashsim.recipe import load_recipe
    from flashsim.train import train_unit

    events = synthetic_events(2000, seed=5)
    rng = np.random.default_rng(5)
    jet = events.Jet
    has = ak.to_numpy(ak.flatten(jet.genJetIdx >= 0)) & (rng.random(int(ak.sum(ak.num(jet)))) < 0.4)
    counts = ak.to_numpy(ak.sum(ak.unflatten(has, ak.num(jet)), axis=1))
    flat_jet = ak.flatten(ak.with_field(jet, ak.local_index(jet), "index"))[has]
    electron = ak.zip({
        "pt": ak.unflatten(ak.to_numpy(flat_jet.pt) * rng.uniform(0.2, 0.6, len(flat_jet)), counts),
        "eta": ak.unflatten(ak.to_numpy(flat_jet.eta), counts),
        "jetIdx": ak.unflatten(ak.to_numpy(flat_jet.index).astype(np.int32), counts),
        "genPartIdx": ak.unflatten(np.full(len(flat_jet), -1, np.int32), counts),
    })
    root = tmp_path_factory.mktemp("fromjet")
    path = write_events(ak.with_field(events, electron, "Electron"), root / "with_electrons.root")
    unit_dir = write_unit(root / "tinyfromjet", FROMJET_UNIT)
    train_unit(load_recipe(write_recipe(root / "recipe.toml", unit_dir, str(path))), log=lambda _msg: None)
    return unit_dir


def test_chain_merges_fromjet_objects_with_valid_jet_references(trained_units, fromjet_unit):
    gen = synthetic_events(400, seed=9)
    chain = Chain([trained_units["tinyjet"], trained_units["tinyfake"], fromjet_unit])
    assert [u.name for u in chain.units][-1] == "tinyfromjet"  # after every producer of Jet
    out = chain.process(gen, seed=2)  # no unit produces Electron: the merging unit creates it
    e, jet = out.Electron, out.Jet
    assert ak.sum(ak.num(e)) > 50 and ak.all(e.genPartIdx == -1)
    assert ak.all(e.pt[:, 1:] <= e.pt[:, :-1])
    assert ak.all((e.jetIdx >= -1) & (e.jetIdx < ak.num(jet)[:, None] + 0 * e.jetIdx))
    in_jet = e.jetIdx >= 0
    assert ak.any(in_jet) and ak.any(~in_jet)  # GenJets the jet unit did not reconstruct give -1
    pointed = jet.genJetIdx[ak.where(in_jet, e.jetIdx, 0)[in_jet]]
    assert ak.all(pointed >= 0)  # a flash jet of a GenJet, never a fake jet


def test_chain_refuses_a_match_through_a_collection_it_does_not_produce(fromjet_unit):
    with pytest.raises(ChainError, match=r"points into 'Jet' \(through Jet_genJetIdx\); no earlier unit of the chain produces 'Jet'"):
        Chain([fromjet_unit]).check(["GenJet", "GenPart", "Pileup", "Jet"])


def test_match_selection_needs_one_reference_into_the_collection_it_reads(tmp_path: Path):
    unit = load_unit(write_unit(tmp_path / "u", FROMJET_UNIT.replace("GenPart.pdgId", "GenJet.pt")), require_trained=False)
    with pytest.raises(InputError, match=r"GenJet\.pt needs GenJet_pt in the input and one cross-reference into it in 'Electron' \(has none\)"):
        unit.kind.training_rows(unit, _hand_built(), np.arange(3), ExtractionReport())


def test_rank_two_pairs_each_genjet_holding_one_electron_with_its_second(tmp_path: Path):
    text = FROMJET_UNIT.replace('selection = "abs(GenPart.pdgId) != 11" }', 'selection = "abs(GenPart.pdgId) != 11", rank = 2 }')
    unit = load_unit(write_unit(tmp_path / "u", text), require_trained=False)
    report = ExtractionReport()
    table = unit.kind.training_rows(unit, _hand_built(), np.arange(3), report)
    # the rows are the GenJets holding one such electron (GenJets 0 and 1 of event 0), paired with their second
    assert list(table["event_id"]) == [0, 0] and list(table["ref.pt"]) == [50.0, 40.0]
    assert list(table["reconstructed"]) == [False, True] and table["tgt.pt"][1] == 6.0
    assert report.dangling_index == 2 and report.shared_partner == 0


@pytest.mark.parametrize("rank", [0, 5])
def test_rank_is_between_one_and_four(rank: int):
    with pytest.raises(UnitError, match=r"match\.rank"):
        _spec(FROMJET_UNIT.replace('selection = "abs(GenPart.pdgId) != 11" }', f'selection = "abs(GenPart.pdgId) != 11", rank = {rank} }}'))


@pytest.fixture(scope="module")
def second_unit(fromjet_unit: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained tiny unit, drawing the second electron of a GenJet (its weights as they are: a test of the rows)."""
    directory = tmp_path_factory.mktemp("second") / "tinyfromjet2"
    shutil.copytree(fromjet_unit, directory)
    spec = directory / "unit.toml"
    text = spec.read_text().replace('name = "tinyfromjet"', 'name = "tinyfromjet2"')
    spec.write_text(text.replace('selection = "abs(GenPart.pdgId) != 11" }', 'selection = "abs(GenPart.pdgId) != 11", rank = 2 }'))
    return directory


def test_a_second_electron_is_drawn_only_in_genjets_holding_a_first(trained_units, fromjet_unit, second_unit):
    gen = synthetic_events(400, seed=9)
    units = [trained_units["tinyjet"], trained_units["tinyfake"], fromjet_unit]
    chain = Chain([*units[:2], second_unit, units[2]])
    assert [u.name for u in chain.units][-2:] == ["tinyfromjet", "tinyfromjet2"]  # after the other units merging into Electron
    first = Chain(units).process(gen, seed=2)
    both = chain.process(gen, seed=2)
    genjet_of = [{int(both.Jet.genJetIdx[i][j]) for j in e.jetIdx if j >= 0} for i, e in enumerate(both.Electron)]
    n_first, n_both = ak.num(first.Electron), ak.num(both.Electron)
    assert ak.all(n_both >= n_first) and ak.sum(n_both - n_first) > 10
    for i in range(len(gen)):  # every GenJet holds its first electron before a second; the first unit's are unchanged
        held = [int(first.Jet.genJetIdx[i][j]) for j in first.Electron.jetIdx[i] if j >= 0]
        assert sorted(first.Electron.pt[i].tolist()) == sorted(set(first.Electron.pt[i].tolist()) & set(both.Electron.pt[i].tolist()))
        assert genjet_of[i] <= set(held) | {-1}


def test_chain_refuses_a_second_electron_with_no_first(trained_units, second_unit):
    with pytest.raises(ChainError, match=r"unit 'tinyfromjet2' draws the Electron of rank 2 per GenJet object \(match\.rank\), after the "
                                         r"Electron earlier units drew; no earlier unit of the chain produces 'Electron'"):
        Chain([trained_units["tinyjet"], second_unit]).check(["GenJet", "GenPart", "Pileup"])
