"""The committed zoo units load with this code and the default chain runs on refsim GEN events."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from flashsim.chain import DEFAULT_CHAIN, Chain
from flashsim.unit import UNITS_DIR, UnitSpec, load_unit

ZOO = sorted(p.name for p in UNITS_DIR.iterdir() if (p / "unit.toml").is_file())
TRAINED = [name for name in ZOO if (UNITS_DIR / name / "model.safetensors").is_file()]


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_spec_is_valid(name: str) -> None:
    spec = UnitSpec.load(UNITS_DIR / name / "unit.toml")
    assert spec.name == name


@pytest.mark.parametrize("name", TRAINED)
def test_trained_zoo_units_load(name: str) -> None:
    unit = load_unit(name)
    assert unit.trained and unit.context_pipeline.fitted and unit.target_pipeline.fitted


@pytest.mark.skipif(not all(n in TRAINED for n in DEFAULT_CHAIN), reason="the default chain is not trained yet")
def test_default_chain_on_refsim_gen(tmp_path) -> None:
    pytest.importorskip("pythia8mc")
    from flashsim.refsim import DetectorParams, generate

    gen = ak.concatenate(list(generate("ttbar", 40, pileup=35.0, seed=3, gen_only=True, params=DetectorParams(pu_pool_size=200))))
    flash = Chain(list(DEFAULT_CHAIN)).run(gen, seed=1)
    for coll, fields in {"Jet": ("pt", "eta", "btagDeepFlavB", "jetId", "genJetIdx"), "Muon": ("pt", "sip3d", "genPartIdx"),
                         "MET": ("pt", "phi", "sumEt")}.items():
        for field in fields:
            values = ak.to_numpy(ak.flatten(flash[coll][field], axis=None))
            assert np.all(np.isfinite(values.astype(np.float64))), f"{coll}.{field}"
    assert ak.all(flash.Jet.pt >= 15) and ak.sum(ak.num(flash.Jet)) > 40
    assert set(np.unique(ak.to_numpy(ak.flatten(flash.Jet.jetId)))) <= {0, 2, 6}
    fractions = flash.Jet.chHEF + flash.Jet.neHEF + flash.Jet.chEmEF + flash.Jet.neEmEF + flash.Jet.muEF
    assert ak.all(fractions <= 1 + 1e-5)

    import warnings

    import uproot
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    from flashsim.io import write_events

    path = write_events(flash, tmp_path / "flash.root")
    assert {"nJet", "Jet_btagDeepFlavB", "Muon_genPartIdx", "MET_sumEt", "GenPart_pdgId"} <= set(uproot.open(path)["Events"].keys())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nano = NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
        matched = nano.Jet.matched_gen
        muon_gen = nano.Muon.matched_gen
    real = flash.Jet.genJetIdx >= 0
    assert ak.all(ak.fill_none(matched.pt, -1)[real] == flash.GenJet.pt[flash.Jet.genJetIdx[real]])
    assert ak.all(abs(muon_gen.pdgId) == 13)
