"""Units and the chain: end-to-end generation, reproducibility, chain conditioning and clear errors."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
import uproot

from conftest import JET_UNIT, MET_UNIT, synthetic_events, write_unit
from flashsim.chain import Chain
from flashsim.errors import ChainError, ConfigError, InputError, UnitError
from flashsim.io import read_events, write_events
from flashsim import kinds
from flashsim.streams import RowNoise, event_keys
from flashsim.unit import load_unit


def test_chain_orders_units_and_runs_end_to_end(trained_units, synthetic_file, tmp_path: Path) -> None:
    chain = Chain([trained_units["tinymet"], trained_units["tinyjet"]])
    assert [u.name for u in chain.units] == ["tinyjet", "tinymet"], "MET reads Jet, so the jet unit must run first"
    out = tmp_path / "flash.root"
    n = chain.generate(synthetic_file, out, seed=5, keep_gen=True, step_size=1000)
    assert n == 3000
    flash = read_events(out)
    gen = read_events(synthetic_file)
    assert ak.all(flash.Jet.pt[:, :-1] >= flash.Jet.pt[:, 1:]), "jets are pt-ordered"
    assert ak.all(flash.Jet.pt > 12), "the unit's output_selection is applied"
    # cross-reference still points at the GenJet each jet was drawn from, after sorting
    ratio = flash.Jet.pt / flash.GenJet.pt[flash.Jet.genJetIdx]
    assert 0.8 < float(ak.mean(ratio)) < 1.2
    assert ak.all(flash.Jet.hadronFlavour == flash.GenJet.hadronFlavour[flash.Jet.genJetIdx])
    eff = ak.sum(ak.num(flash.Jet)) / ak.sum(ak.num(gen.GenJet))
    assert 0.8 < eff < 0.97, f"efficiency model keeps {eff:.3f} of gen jets (truth 0.90)"
    assert np.all(np.isfinite(ak.to_numpy(flash.MET.pt))) and ak.all(flash.MET.pt >= 0)
    branches = uproot.open(out)["Events"].keys()
    assert {"nJet", "Jet_pt", "Jet_genJetIdx", "MET_pt", "MET_phi", "event", "GenJet_pt"} <= set(branches)
    assert str(flash.Jet.genJetIdx.type.content.content) == "int32"


def test_output_reads_with_coffea(trained_units, synthetic_file, tmp_path: Path) -> None:
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    out = Chain([trained_units["tinyjet"]]).generate(synthetic_file, tmp_path / "flash.root", keep_gen=True) and tmp_path / "flash.root"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        events = NanoEventsFactory.from_root({str(out): "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
        matched = events.Jet.matched_gen
    assert ak.all(matched.pt == events.GenJet.pt[events.Jet.genJetIdx])


def test_same_seed_same_output_different_seed_different(trained_units, synthetic_file) -> None:
    chain = Chain([trained_units["tinyjet"], trained_units["tinymet"]])
    events = read_events(synthetic_file)
    a = chain.run(events, seed=1)
    b = chain.run(events, seed=1)
    c = chain.run(events, seed=2)
    for field in ("pt", "eta", "phi", "genJetIdx"):
        assert ak.array_equal(a.Jet[field], b.Jet[field])
    assert ak.array_equal(a.MET.pt, b.MET.pt)
    assert not ak.array_equal(a.Jet.pt, c.Jet.pt)
    assert not np.array_equal(ak.to_numpy(a.MET.pt), ak.to_numpy(c.MET.pt))


def test_chain_samples_in_its_precision(trained_units, synthetic_file) -> None:
    """bfloat16 conditioners: the same jets (the efficiency draw stays float32), their pt within bfloat16 rounding of
    float32's; a precision the chain's units were not loaded with, or an unknown one, is an error naming it."""
    events = read_events(synthetic_file)
    single = Chain([trained_units["tinyjet"]]).run(events, seed=1).Jet
    half = Chain([trained_units["tinyjet"]], precision="bfloat16").run(events, seed=1).Jet
    assert ak.array_equal(ak.sort(single.genJetIdx), ak.sort(half.genJetIdx))
    a, b = (ak.to_numpy(ak.flatten(jets.pt[ak.argsort(jets.genJetIdx)])) for jets in (single, half))
    moved = np.abs(b / a - 1)
    assert np.median(moved) < 1e-2 and (moved > 0).mean() > 0.5
    with pytest.raises(ChainError, match="'tinyjet'.*bfloat16.*float32"):
        Chain([load_unit(trained_units["tinyjet"], precision="bfloat16")])
    with pytest.raises(ConfigError, match="'float16'"):
        Chain([trained_units["tinyjet"]], precision="float16")


def test_met_conditions_on_upstream_reco_jets(trained_units, synthetic_file) -> None:
    """Changing only the flash jets (not GEN) changes the MET drawn with the same seed."""
    met = load_unit(trained_units["tinymet"])
    events = Chain([trained_units["tinyjet"]]).run(read_events(synthetic_file), seed=1)
    shifted = ak.with_field(events, ak.with_field(events.Jet, events.Jet.pt * 1.5, "pt"), "Jet")
    base = met.run(events, seed=3).MET.pt
    moved = met.run(shifted, seed=3).MET.pt
    assert not np.allclose(ak.to_numpy(base), ak.to_numpy(moved))


def test_oversample_repeats_events_with_weights(trained_units, synthetic_file, tmp_path: Path) -> None:
    out = tmp_path / "over.parquet"
    chain = Chain([trained_units["tinyjet"]])
    with pytest.warns(UserWarning, match="Jet_genJetIdx written without a GenPart collection"):
        written = chain.generate(synthetic_file, out, oversample=3, step_size=1000)
    flash = read_events(out)
    assert written == 9000 and len(flash) == 9000
    assert ak.to_list(flash.FlashSim.oversampleIndex[:6]) == [0, 1, 2, 0, 1, 2]
    assert np.allclose(ak.to_numpy(flash.FlashSim.weight), 1 / 3)
    assert ak.to_list(flash.event[:6]) == [0, 0, 0, 1, 1, 1]
    assert not ak.array_equal(flash.Jet.pt[0], flash.Jet.pt[1]), "each copy is an independent draw"


# ---- errors -----------------------------------------------------------------------------------


def test_cycle_is_reported(tmp_path: Path) -> None:
    a = write_unit(tmp_path / "a", JET_UNIT.replace('name = "tinyjet"', 'name = "a"').replace('output = "Jet"', 'output = "Muon"')
                   .replace('{ event = "Pileup.nTrueInt" },', '{ event = "Pileup.nTrueInt" }, { feature = "count", collection = "Electron" },'))
    b = write_unit(tmp_path / "b", JET_UNIT.replace('name = "tinyjet"', 'name = "b"').replace('output = "Jet"', 'output = "Electron"')
                   .replace('{ event = "Pileup.nTrueInt" },', '{ event = "Pileup.nTrueInt" }, { feature = "count", collection = "Muon" },'))
    from flashsim.unit import Unit, UnitSpec

    units = [Unit(UnitSpec.load(d / "unit.toml")) for d in (a, b)]
    with pytest.raises(ChainError, match=r"cycle: a \(needs \['b'\]\), b \(needs \['a'\]\)"):
        Chain(units)


def test_missing_column_names_unit_and_column(trained_units, tmp_path: Path) -> None:
    events = synthetic_events(50)
    chain = Chain([trained_units["tinymet"]])
    with pytest.raises(ChainError, match=r"unit 'tinymet' needs column 'GenMET'"):
        chain.run(events[[f for f in events.fields if f != "GenMET"]])


def test_missing_branch_in_input(trained_units, tmp_path: Path) -> None:
    events = synthetic_events(50)
    events = ak.with_field(events, events.GenJet[["pt", "phi", "mass", "hadronFlavour"]], "GenJet")
    path = write_events(events, tmp_path / "noeta.root")
    with pytest.raises(InputError, match=r"unit 'tinyjet'.*field 'eta' not in collection"):
        Chain([trained_units["tinyjet"]]).generate(path, tmp_path / "out.root")
    assert not (tmp_path / "out.root").exists()


def test_incompatible_unit_version(trained_units, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(trained_units["tinyjet"], tmp_path / "old"))
    text = (copy / "unit.toml").read_text().replace("format_version = 1", "format_version = 7")
    (copy / "unit.toml").write_text(text)
    with pytest.raises(UnitError, match=r"format_version 7 is not supported"):
        load_unit(copy)


def test_corrupted_weight_file(trained_units, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(trained_units["tinyjet"], tmp_path / "broken"))
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UnitError, match=r"unit 'tinyjet'.*model.safetensors differs from the file training wrote"):
        load_unit(copy)


def test_missing_classifier_weights_are_refused(trained_units, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(trained_units["tinyjet"], tmp_path / "noeff"))
    (copy / "efficiency.safetensors").unlink()
    with pytest.raises(UnitError, match=r"unit 'tinyjet'.*efficiency.safetensors is missing"):
        load_unit(copy)


def test_unit_toml_edited_after_training_is_refused(trained_units, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(trained_units["tinyjet"], tmp_path / "edited"))
    spec = copy / "unit.toml"
    spec.write_text(spec.read_text().replace('{ column = "mass", steps = [{ type = "log" }', '{ column = "mass", steps = [{ type = "log1p" }', 1))
    with pytest.raises(UnitError, match=r"unit 'tinyjet'.*targets of unit.toml differ from the trained preprocessing.json.*'log1p'.*retrain"):
        load_unit(copy)
    spec.write_text(spec.read_text().replace('type = "log1p"', 'type = "lgo"', 1))
    with pytest.raises(UnitError, match=r"unit 'tinyjet'.*unit.toml\): targets: .*'mass'.*unknown step type 'lgo' \(did you mean 'log'\?\)"):
        load_unit(copy)


def test_untrained_unit_refuses_to_run(tmp_path: Path) -> None:
    unit_dir = write_unit(tmp_path / "fresh", MET_UNIT)
    with pytest.raises(UnitError, match=r"no trained weights; run `flashsim train tinymet`"):
        load_unit(unit_dir)


def test_multiplicity_unit_merges_fake_jets(trained_units, synthetic_file) -> None:
    chain = Chain([trained_units["tinymet"], trained_units["tinyfake"], trained_units["tinyjet"]])
    assert [u.name for u in chain.units] == ["tinyjet", "tinyfake", "tinymet"]
    events = read_events(synthetic_file)
    flash = chain.run(events, seed=4)
    fake = flash.Jet[flash.Jet.genJetIdx == -1]
    n_fake = ak.to_numpy(ak.num(fake))
    assert ak.all(flash.Jet.pt[:, :-1] >= flash.Jet.pt[:, 1:]), "merged collection re-sorted by pt"
    assert n_fake.max() <= 4
    ref_fake = ak.to_numpy(ak.num(events.Jet[events.Jet.genJetIdx == -1]))
    assert abs(n_fake.mean() - ref_fake.mean()) < 0.25 * ref_fake.mean() + 0.05
    matched = flash.Jet[flash.Jet.genJetIdx >= 0]
    assert ak.all(matched.hadronFlavour == flash.GenJet.hadronFlavour[matched.genJetIdx]), "cross-references survive the merge"
    assert ak.all(fake.pt > 0)
    assert ak.all(abs(fake.phi) <= np.pi), "phi drawn relative to the previous fake jet, wrapped into [-pi, pi]"


def test_multiplicity_unit_draws_objects_in_descending_pt(trained_units, synthetic_file, monkeypatch) -> None:
    events = read_events(synthetic_file)
    capped, default = {}, kinds.ORDER_REDRAWS
    for redraws in (default, 0):
        monkeypatch.setattr(kinds, "ORDER_REDRAWS", redraws)
        unit = load_unit(trained_units["tinyfake"])
        noise = RowNoise(event_keys(events, 2, unit.name))
        drawn = unit.kind.draw(unit, events, noise, torch.device("cpu"), 10_000)[1]["Jet"]
        assert ak.sum(ak.num(drawn) > 1) > 50
        assert ak.all(drawn.pt[:, :-1] >= drawn.pt[:, 1:]), "each fake jet lies below the previous one (redrawn, else capped)"
        capped[redraws] = float(ak.mean(ak.flatten(drawn.pt[:, :-1] == drawn.pt[:, 1:])))
    # the tiny model leaks above the previous jet in a large fraction of draws; redrawing leaves few to cap
    assert capped[0] > 0.2 and capped[default] < capped[0] / 3


def test_output_rules_set_columns_where_their_cut_holds_in_order(trained_units, synthetic_file, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(trained_units["tinyjet"], tmp_path / "ruled"))
    rules = ('output_rules = [\n'
             '  { where = "abs(eta) > 1.5", columns = ["mass"], value = -1.0 },\n'
             '  { where = "mass < 0", columns = ["mass", "phi"], value = 0 },\n'
             ']\ncontext = [')
    (copy / "unit.toml").write_text((copy / "unit.toml").read_text().replace("context = [", rules, 1))
    events = read_events(synthetic_file)
    plain = Chain([trained_units["tinyjet"]]).run(events, seed=3).Jet
    ruled = Chain([load_unit(copy)]).run(events, seed=3).Jet
    forward = abs(ruled.eta) > 1.5
    assert ak.any(forward) and ak.all(ruled.mass[forward] == 0) and ak.all(ruled.phi[forward] == 0)
    assert ak.all(ruled.mass[~forward] == plain.mass[~forward]) and ak.all(ruled.pt == plain.pt)
    assert str(ruled.mass.type.content.content) == str(plain.mass.type.content.content), "dtypes kept"


def test_output_rules_are_checked_on_load(trained_units, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(trained_units["tinyjet"], tmp_path / "badrule"))
    bad = 'output_rules = [{ where = "abs(eta) > 2.5", columns = ["btagDeepFlavB"], value = -1.0 }]\ncontext = ['
    (copy / "unit.toml").write_text((copy / "unit.toml").read_text().replace("context = [", bad, 1))
    with pytest.raises(UnitError, match=r"output_rules\[0\]: columns \['btagDeepFlavB'\] are not targets, carried or constant"):
        load_unit(copy)
