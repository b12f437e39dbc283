"""Electrons and photons of the reference detector: NanoAOD names and types per version, physics sanity on
Z->ee and ttbar, cross references, coffea's matched_gen, and training rows of an electron object unit."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

ak = pytest.importorskip("awkward")
pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from conftest import nanoevents  # noqa: E402
from flashsim.io import NanoAODWriter, write_events  # noqa: E402
from flashsim.io.schema import nano_version  # noqa: E402
from flashsim.refsim import DetectorParams, generate  # noqa: E402

PARAMS = DetectorParams(pu_pool_size=200)
PROMPT = 1

# the branches every version must get from refsim (flashsim's working names; the writer renames for Run 3)
ELECTRON = ("pt", "eta", "phi", "mass", "charge", "pdgId", "dxy", "dxyErr", "dz", "dzErr", "ip3d", "sip3d", "sieie", "r9",
            "hoe", "deltaEtaSC", "pfRelIso03_all", "pfRelIso03_chg", "miniPFRelIso_all", "cutBased", "mvaFall17V2Iso_WP80",
            "mvaFall17V2Iso_WP90", "lostHits", "convVeto", "genPartIdx", "genPartFlav", "photonIdx", "jetIdx")
PHOTON = ("pt", "eta", "phi", "sieie", "r9", "hoe", "pfRelIso03_all", "pfRelIso03_chg", "cutBased", "mvaID_WP80", "mvaID_WP90",
          "pixelSeed", "electronVeto", "isScEtaEB", "isScEtaEE", "genPartIdx", "genPartFlav", "electronIdx", "jetIdx")
JET = ("electronIdx1", "electronIdx2", "nElectrons")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("refsim_cache")


@pytest.fixture(scope="module")
def zee(cache_dir):
    return ak.concatenate(list(generate("zee", 300, pileup=20.0, seed=21, params=PARAMS, batch_size=150, cache_dir=cache_dir)))


def _flat(x):
    return ak.to_numpy(ak.flatten(x, axis=None))


@pytest.mark.parametrize("version", ["v9", "v12", "v15"])
def test_branches_named_and_typed_as_the_version(zee, tmp_path, version):
    nano = nano_version(version)
    path = tmp_path / f"{version}.root"
    with NanoAODWriter(path, version=version, strict=True) as writer:
        writer.write(zee[:40])
    import uproot

    tree = uproot.open(path)["Events"]
    written = {k for k in tree.keys() if k.startswith(("Electron_", "Photon_", "Jet_"))}
    wanted = {nano.file_name(f"Electron_{f}") for f in ELECTRON} | {nano.file_name(f"Photon_{f}") for f in PHOTON}
    wanted |= {f"Jet_{f}" for f in JET}
    assert wanted <= written
    for branch in written:
        assert branch in nano.types, branch
        assert tree[branch].array(library="ak").layout.content.dtype == nano.types[branch].dtype, branch
    if nano.run == 3:
        assert {"Electron_mvaIso_WP80", "Photon_pfRelIso03_all_quadratic"} <= written and "Photon_mass" not in written


def test_zee_response_resolution_efficiency_and_id(zee):
    e, gp = zee.Electron, zee.GenPart
    prompt = e[(e.genPartFlav == PROMPT) & (e.pt > 20)]
    gen = gp[prompt.genPartIdx]
    assert ak.all(abs(gen.pdgId) == 11)
    resp, aeta = _flat(prompt.pt / gen.pt), np.abs(_flat(gen.eta))
    barrel, endcap = resp[aeta < 1.4442], resp[(aeta > 1.566) & (aeta < 2.5)]
    assert len(barrel) > 150 and len(endcap) > 80

    def sigma_eff(x):
        lo, hi = np.quantile(x, [0.1587, 0.8413])
        return (hi - lo) / 2

    assert abs(np.median(barrel) - 1) < 0.01 and abs(np.median(endcap) - 1) < 0.015
    assert 0.01 < sigma_eff(barrel) < 0.03 < sigma_eff(endcap) < 0.05
    # efficiency of prompt gen electrons above 25 GeV in the barrel
    gen_e = (abs(gp.pdgId) == 11) & (gp.status == 1) & ((gp.statusFlags & 1) == 1) & (gp.pt > 25) & (abs(gp.eta) < 1.4442)
    found = ak.any(ak.local_index(gp)[:, :, None] == e.genPartIdx[:, None, :], axis=2)
    assert 0.9 < ak.sum(gen_e & found) / ak.sum(gen_e) < 1.0
    # an isolated prompt electron passes the loose cut-based ID most of the time; WP90 holds ~90 %
    assert ak.mean(prompt.cutBased >= 2) > 0.75
    assert 0.8 < ak.mean(prompt.mvaFall17V2Iso_WP90) < 0.97
    assert ak.mean(prompt.mvaFall17V2Iso_WP80) < ak.mean(prompt.mvaFall17V2Iso_WP90)
    # most prompt electrons are also photons; the photon fails the electron veto and has a pixel seed
    as_photon = zee.Photon[zee.Photon.genPartFlav == 11]
    assert ak.mean(as_photon.electronVeto) < 0.3 and ak.mean(as_photon.pixelSeed) > 0.9


def test_cross_references_are_valid_and_mutual(zee):
    e, ph, jet = zee.Electron, zee.Photon, zee.Jet
    for idx, target in ((e.photonIdx, ph), (e.jetIdx, jet), (ph.electronIdx, e), (ph.jetIdx, jet),
                        (jet.electronIdx1, e), (jet.electronIdx2, e), (e.genPartIdx, zee.GenPart), (ph.genPartIdx, zee.GenPart)):
        n = ak.broadcast_arrays(ak.num(target), idx)[0]
        assert ak.all((idx >= -1) & (idx < n))
    with_photon = e[e.photonIdx >= 0]
    assert ak.sum(ak.num(with_photon)) > 100
    assert ak.all(ph.electronIdx[with_photon.photonIdx] == ak.local_index(e)[e.photonIdx >= 0])
    # a jet's electrons are the electrons whose jetIdx is that jet, counted by nElectrons
    in_jet = ak.sum(ak.local_index(jet)[:, :, None] == e.jetIdx[:, None, :], axis=2)
    assert ak.all(in_jet == jet.nElectrons)
    first = jet[jet.electronIdx1 >= 0]
    assert ak.all(e.jetIdx[first.electronIdx1] == ak.local_index(jet)[jet.electronIdx1 >= 0])


def test_egamma_has_its_own_random_stream(cache_dir):
    """Switching e/gamma off changes no other collection (its draws come from a stream of their own)."""
    on, off = (ak.concatenate(list(generate("ttbar", 20, pileup=10.0, seed=4, params=PARAMS.replace(egamma=flag),
                                            cache_dir=cache_dir))) for flag in (True, False))
    assert "Electron" not in off.fields and ak.sum(ak.num(on.Electron)) > 0
    for coll in ("Jet", "Muon", "MET", "GenPart"):
        for field in off[coll].fields:
            assert ak.all(on[coll][field] == off[coll][field]), f"{coll}.{field}"


def test_non_prompt_electrons_and_photons_in_ttbar_fail_the_ids(cache_dir):
    ev = ak.concatenate(list(generate("ttbar", 150, pileup=10.0, seed=8, params=PARAMS, cache_dir=cache_dir)))
    e, ph = ev.Electron, ev.Photon
    heavy = e[((e.genPartFlav == 5) | (e.genPartFlav == 4)) & (e.pt > 7)]
    assert ak.sum(ak.num(heavy)) >= 10
    assert ak.mean(heavy.pfRelIso03_all < 0.1) < 0.3 and ak.mean(heavy.cutBased >= 2) < 0.2
    fake = ph[(ph.genPartFlav == 0) & (ph.pt > 20)]
    assert ak.sum(ak.num(fake)) >= 10
    assert ak.mean(fake.cutBased >= 1) < 0.2
    hadron_fakes = e[e.genPartIdx < 0]
    assert ak.all(hadron_fakes.genPartFlav == 0)


def test_coffea_reads_matched_gen(zee, tmp_path):
    events = nanoevents(write_events(zee, tmp_path / "zee.root"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ele_gen, pho_gen = events.Electron.matched_gen, events.Photon.matched_gen
        pho_ele = events.Photon.matched_electron
    has = zee.Electron.genPartIdx >= 0
    assert ak.sum(~ak.is_none(ele_gen.pt, axis=1)) == ak.sum(has) > 0
    assert ak.all(np.isin(abs(_flat(ak.drop_none(ele_gen.pdgId))), (11, 22)))
    assert ak.all(ak.fill_none(ele_gen.pt, 0)[has] == zee.GenPart.pt[zee.Electron.genPartIdx[has]])
    assert ak.all(np.isin(abs(_flat(ak.drop_none(pho_gen.pdgId))), (11, 22)))
    assert ak.sum(~ak.is_none(pho_ele.pt, axis=1)) == ak.sum(zee.Photon.electronIdx >= 0)


ELECTRON_UNIT = """
name = "tinyelectron"
format_version = 1
type = "object"
output = "Electron"
gen_index = "genPartIdx"
output_selection = "pt > 5"
source = { collection = "GenPart", selection = "(abs(pdgId) == 11) & (status == 1)" }
context = [
  { field = "pt", steps = [{ type = "log" }, { type = "standardize" }] },
  { field = "eta" },
  { event = "Pileup.nTrueInt" },
]
targets = [
  { column = "pt", steps = [{ type = "log_ratio", reference = "pt" }, { type = "standardize" }] },
  { column = "eta", steps = [{ type = "difference", reference = "eta" }, { type = "standardize" }] },
  { column = "sieie", steps = [{ type = "log" }, { type = "standardize" }] },
  { column = "cutBased", steps = [{ type = "categorical", values = [0, 1, 2, 3, 4] }, { type = "standardize" }] },
]
model = { type = "coupling_rqs", layers = 2, hidden = 16, blocks = 1, bins = 4 }
efficiency = { hidden = 16, layers = 2 }
"""


@pytest.mark.parametrize("version", ["v9", "v12"])
def test_dataset_rows_of_an_electron_unit(zee, tmp_path: Path, version):
    """``flashsim dataset`` builds electron rows (matched through Electron_genPartIdx) from any version's file."""
    from flashsim.datasets import extract
    from flashsim.unit import load_unit

    (tmp_path / "unit").mkdir()
    (tmp_path / "unit" / "unit.toml").write_text(ELECTRON_UNIT)
    path = tmp_path / f"zee_{version}.root"
    with NanoAODWriter(path, version=version, strict=True) as writer:
        writer.write(zee)
    table = extract(load_unit(tmp_path / "unit", require_trained=False), path)
    gen_e = (abs(zee.GenPart.pdgId) == 11) & (zee.GenPart.status == 1)
    matched = (zee.Electron.genPartIdx >= 0) & (zee.Electron.pt > 5)
    matched = matched & (abs(zee.GenPart.pdgId[ak.where(matched, zee.Electron.genPartIdx, 0)]) == 11)
    assert table.report.rows == ak.sum(gen_e)
    assert table.report.matched == ak.sum(matched) > 300
