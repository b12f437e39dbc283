"""The zoo's electron and photon units (from generator electrons and photons): strict specs, and a chain that
writes Electron and Photon with each NanoAOD version's names and types, readable by coffea (matched_gen)."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest

ak = pytest.importorskip("awkward")
pytest.importorskip("pythia8mc")

from conftest import nanoevents  # noqa: E402
from flashsim.chain import DEFAULT_CHAIN, Chain  # noqa: E402
from flashsim.cli import app  # noqa: E402
from flashsim.crossrefs import nearest  # noqa: E402
from flashsim.errors import UnitError  # noqa: E402
from flashsim.io import write_events  # noqa: E402
from flashsim.io.schema import nano_version  # noqa: E402
from flashsim.locations import zoo_dir  # noqa: E402
from flashsim.unit import UnitSpec  # noqa: E402

UNITS = ("electron", "photon")


@pytest.fixture(scope="module")
def zee_gen() -> ak.Array:
    from flashsim.refsim import DetectorParams, generate

    return ak.concatenate(list(generate("zee", 60, pileup=35.0, seed=7, gen_only=True, params=DetectorParams(pu_pool_size=200))))


@pytest.fixture(scope="module")
def flash(zee_gen) -> ak.Array:
    return Chain(["jet", *UNITS]).run(zee_gen, seed=2)  # the units link Jet (jetIdx)


def _flat(x: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(x, axis=None))


def test_in_the_default_chain_after_the_jets() -> None:
    chain = list(DEFAULT_CHAIN)
    assert set(UNITS) <= set(chain) and all(chain.index("jet") < chain.index(name) for name in UNITS)


@pytest.mark.parametrize("name", UNITS)
def test_spec_is_strict(name: str) -> None:
    text = (zoo_dir() / name / "unit.toml").read_text()
    assert UnitSpec.from_dict(tomllib.loads(text)).name == name
    bad = tomllib.loads(text.replace("output_rules = [", 'output_rules = [\n  { where = "pt > 0", columns = ["nosuch"], value = 1 },', 1))
    with pytest.raises(UnitError, match=r"output_rules\[0\]: columns \['nosuch'\]"):
        UnitSpec.from_dict(bad)


def test_electrons_follow_their_gen_electrons_and_rules(flash, zee_gen) -> None:
    e = flash.Electron
    assert ak.sum(ak.num(e)) > 60 and ak.all(e.pt > 5) and ak.all(abs(e.eta) < 2.5)
    gen = zee_gen.GenPart[e.genPartIdx]
    assert ak.all(abs(gen.pdgId) == 11) and ak.all(gen.status == 1)
    assert ak.all(e.pdgId == -11 * e.charge)  # pdgId follows the drawn charge
    # the working points are cuts on the drawn score, nested
    assert ak.all(e.mvaFall17V2Iso_WP80 == (e.mvaFall17V2Iso > 0.5)) and ak.all(e.mvaFall17V2Iso_WP90 == (e.mvaFall17V2Iso > 0.12))
    assert ak.all(e.mvaFall17V2Iso_WP90[e.mvaFall17V2Iso_WP80 == 1] == 1) and ak.all(abs(e.mvaFall17V2Iso) <= 1)
    assert abs(np.median(_flat(e.pt / gen.pt)) - 1) < 0.05
    assert set(np.unique(_flat(e.cutBased))) <= {0, 1, 2, 3, 4}


def test_photon_regions_and_working_points_follow_eta_and_score(flash, zee_gen) -> None:
    ph = flash.Photon
    assert ak.sum(ak.num(ph)) > 0 and ak.all(ph.pt > 10)
    assert ak.all(zee_gen.GenPart.pdgId[ph.genPartIdx] == 22)
    aeta = abs(ph.eta)
    assert ak.all(ph.isScEtaEB == (aeta < 1.4442)) and ak.all(ph.isScEtaEE == ((aeta > 1.566) & (aeta < 2.5)))
    assert ak.all(ph.mvaID_WP80 == (ph.mvaID > 0.88)) and ak.all(ph.mvaID_WP90 == (ph.mvaID > 0.77))


@pytest.mark.filterwarnings("ignore:NanoAOD v15 has no Jet_qgl")  # and Photon_mass: extra branches
@pytest.mark.parametrize("version", ["v9", "v15"])
def test_generate_writes_version_types_coffea_reads(zee_gen, tmp_path: Path, version: str) -> None:
    from typer.testing import CliRunner

    gen = tmp_path / "gen.root"
    write_events(zee_gen, gen)
    out = tmp_path / f"flash_{version}.root"
    result = CliRunner().invoke(app, ["generate", "--chain", ",".join(DEFAULT_CHAIN), "-i", str(gen), "-o", str(out), "--keep-gen",
                                      "--nano-version", version, "--seed", "3"])
    assert result.exit_code == 0, result.output
    import uproot

    nano = nano_version(version)
    tree = uproot.open(out)["Events"]
    written = {k for k in tree.keys() if k.startswith(("Electron_", "Photon_", "Jet_electronIdx", "Jet_nElectrons"))}
    for branch in ("Jet_electronIdx1", "Jet_nElectrons", "Electron_jetIdx", "Electron_mvaFall17V2Iso", "Electron_mvaFall17V2Iso_WP80", "Electron_cutBased", "Electron_genPartIdx", "Photon_pfRelIso03_all",
                   "Photon_isScEtaEB", "Photon_electronVeto", "Photon_genPartFlav"):
        assert nano.file_name(branch) in written, branch
    # Run 3 NanoAOD dropped Photon_mass (coffea fills in 0): the unit's constant is then an extra branch
    assert {b for b in written if b not in nano.types} <= {"Photon_mass"}
    for branch in written & set(nano.types):
        assert tree[branch].array(library="ak").layout.content.dtype == nano.types[branch].dtype, branch
    events = nanoevents(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ele_gen, pho_gen = events.Electron.matched_gen, events.Photon.matched_gen
    # electrons of gen electrons (electron) and conversion legs of gen photons (electron_fromphoton)
    assert ak.sum(ak.num(events.Electron)) > 0 and ak.all((abs(ele_gen.pdgId) == 11) | (ele_gen.pdgId == 22))
    assert ak.any(abs(ele_gen.pdgId) == 11)
    # photons of gen photons (photon) and of gen electrons' clusters (photon_fromelectron)
    assert ak.all((pho_gen.pdgId == 22) | (abs(pho_gen.pdgId) == 11)) and ak.any(pho_gen.pdgId == 22)


def test_both_sources_merge_into_one_collection(zee_gen) -> None:
    """The GenPart-sourced and the from-jet units write the same fields, so one chain holds both sources per collection:
    GenPart-sourced objects point to a gen electron (photon) and to the nearest flash jet within dR 0.4, from-jet ones have
    genPartIdx -1 and jetIdx to a flash jet; after every merge each jet names its first two electrons and counts them."""
    flash = Chain(["jet", "fakejet", "electron", "electron_fromjet", "photon", "photon_fromjet", "photon_fromelectron"]).run(zee_gen, seed=2)
    # photons point to gen photons (photon) or to gen electrons (photon_fromelectron: their clusters); the from-jet
    # photons (no gen partner, ~1 % of Z -> ee events) are too rare in 60 events to require one
    for collection, pdgs, some_from_jets in (("Electron", [11], True), ("Photon", [11, 22], False)):
        objects = flash[collection]
        from_gen = objects.genPartIdx >= 0
        assert ak.all(np.isin(ak.to_numpy(ak.flatten(abs(flash.GenPart.pdgId[objects.genPartIdx[from_gen]]))), pdgs))
        from_jets = objects[~from_gen]
        assert (ak.sum(ak.num(from_jets)) > 0 or not some_from_jets) and ak.sum(ak.num(objects[from_gen])) > 0
        in_jet = from_jets.jetIdx >= 0
        assert ak.all(from_jets.jetIdx[in_jet] < ak.num(flash.Jet)) and ak.all(from_jets.jetIdx[~in_jet] == -1)
        assert ak.all(objects.pt[:, 1:] <= objects.pt[:, :-1])  # one pt-ordered collection
        assert ak.all(objects.jetIdx[from_gen] == nearest(objects[from_gen], flash.Jet, 0.4))
        assert ak.any(objects.jetIdx[from_gen] >= 0)
    e, jet = flash.Electron, flash.Jet
    assert ak.sum(jet.nElectrons) == ak.sum(e.jetIdx >= 0)
    in_jet = ak.sum(e.jetIdx[:, None, :] == ak.local_index(jet)[:, :, None], axis=2)
    assert ak.all(jet.nElectrons == in_jet)
    for k, name in enumerate(("electronIdx1", "electronIdx2")):  # the k-th electron (in pt order) whose jetIdx is the jet
        pointed = jet[name] >= 0
        assert ak.all(pointed == (in_jet > k))
        assert ak.all(e.jetIdx[jet[name][pointed]] == ak.local_index(jet)[pointed])
    assert ak.all(jet.electronIdx1[jet.nElectrons >= 2] < jet.electronIdx2[jet.nElectrons >= 2])


def test_photon_id_level_agrees_with_the_drawn_variables() -> None:
    """A photon drawn at cut-based level k passes refsim's cuts of every level up to k on its drawn H/E, sieie and
    charged isolation (the level is drawn below what those pass: cut_level_residual)."""
    from flashsim.refsim import DetectorParams, generate

    params = DetectorParams()
    gen = ak.concatenate(list(generate("gjets", 300, pileup=35.0, seed=5, gen_only=True, params=DetectorParams(pu_pool_size=200))))
    ph = ak.flatten(Chain(["jet", "photon", "photon_fromjet"]).run(gen, seed=3).Photon)
    level, endcap = ak.to_numpy(ph.cutBased), ak.to_numpy(abs(ph.eta) > 1.5)
    variables = np.column_stack([ak.to_numpy(ph.hoe), ak.to_numpy(ph.sieie), ak.to_numpy(ph.pfRelIso03_chg * ph.pt)])
    assert len(level) > 100 and set(np.unique(level)) >= {0, 3}
    for region, table in ((False, params.pho_id_barrel), (True, params.pho_id_endcap)):
        cuts = np.reshape(table, (3, 5))[:, :3]  # H/E, sieie, charged isolation (GeV) per working point
        rows = endcap == region
        for k in range(1, 4):
            reached = rows & (level >= k)
            assert np.all(variables[reached] < cuts[k - 1]), f"level {k} {'endcap' if region else 'barrel'}"
